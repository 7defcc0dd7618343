"""Searching the Hugging Face Hub for models (``hubtune models PATTERN --remote``).

One call to ``HfApi.list_models`` (``search=``, sorted by downloads); huggingface_hub retries a 429 or a
5xx answer on that request itself. Each result becomes a row shaped like the local listing's, plus the
Hub's own task, library and download count. huggingface_hub is imported inside the function, so
importing this module stays instant.
"""

from __future__ import annotations

import fnmatch
import re
from typing import Any

from hubtune.errors import OfflineError
from hubtune.refs import HUB_SOURCE

DEFAULT_LIMIT = 20

#: pipeline tags whose models take images, text, or both (anything else: unknown, ``None``)
IMAGE_TASKS = frozenset({
    "image-classification", "image-feature-extraction", "object-detection", "image-segmentation",
    "depth-estimation", "image-to-image", "mask-generation", "keypoint-detection", "unconditional-image-generation",
})
TEXT_TASKS = frozenset({
    "feature-extraction", "sentence-similarity", "text-classification", "token-classification", "fill-mask",
    "question-answering", "summarization", "translation", "text-generation", "text2text-generation",
    "zero-shot-classification", "text-ranking", "table-question-answering",
})
TEXT_IMAGE_TASKS = frozenset({
    "zero-shot-image-classification", "zero-shot-object-detection", "image-text-to-text", "image-to-text",
    "visual-question-answering", "document-question-answering", "text-to-image",
})
#: when a model has no pipeline tag, what its library says (these libraries hold one kind of model)
LIBRARY_MODALITY = {"sentence-transformers": "text", "timm": "image", "open_clip": "text+image"}

_GLOB = re.compile(r"[*?\[\]]")


def modality_of_task(task: str | None, library: str | None = None) -> str | None:
    """``image``, ``text`` or ``text+image`` for a Hub pipeline tag (or, without one, the library); else None."""
    if task in IMAGE_TASKS:
        return "image"
    if task in TEXT_TASKS:
        return "text"
    if task in TEXT_IMAGE_TASKS:
        return "text+image"
    return LIBRARY_MODALITY.get(library or "") if task is None else None


def _search_term(pattern: str | None) -> str | None:
    """What the Hub's substring search is given for a shell pattern: its longest literal piece."""
    if not pattern:
        return None
    pieces = [piece for piece in _GLOB.split(pattern) if piece]
    return max(pieces, key=len) if pieces else None


def _matches(repo_id: str, pattern: str | None) -> bool:
    if not pattern or not _GLOB.search(pattern):
        return True  # a plain word: the Hub's search decided
    name = repo_id.rpartition("/")[2]
    return any(fnmatch.fnmatch(text.lower(), pattern.lower()) for text in (repo_id, name))


def search_hub(pattern: str | None = None, *, limit: int = DEFAULT_LIMIT, endpoint: str | None = None,
               source: str = HUB_SOURCE) -> list[dict[str, Any]]:
    """The Hub's models matching ``pattern``, most downloaded first, at most ``limit``.

    A plain word is the Hub's substring search; a shell pattern (``bert*``, ``*-base``) is searched by its
    longest literal piece and then matched against ``owner/name`` or ``name``. Each row: ``ref``
    (``hf:owner/name``), ``source``, ``modality`` (from the pipeline tag, None when unknown), ``task``,
    ``library``, ``downloads``. Offline mode, an unreachable Hub or an error answer is an
    :class:`OfflineError`.
    """
    from hubtune import constants

    if constants.offline_requested():
        raise OfflineError(
            "searching the Hugging Face Hub (--remote) needs the network, but offline mode is on (HF_HUB_OFFLINE, "
            "TRANSFORMERS_OFFLINE or HUBTUNE_OFFLINE); unset it to search, or drop --remote to list cached models"
        )
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        from httpx2 import TransportError  # huggingface_hub 2.x talks through httpx2
    except ImportError:  # older releases use requests, whose errors are OSErrors
        TransportError = OSError  # type: ignore[assignment,misc]

    api = HfApi(endpoint=endpoint)
    try:
        found = list(api.list_models(search=_search_term(pattern), sort="downloads", limit=limit))
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", "?")
        raise OfflineError(f"the Hub's model search ({api.endpoint}) answered HTTP {status}; try again later") from exc
    except TransportError as exc:  # the Hub is unreachable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OfflineError(
            f"the Hub's model search could not reach {api.endpoint} ({reason}); check the network or HF_ENDPOINT"
        ) from exc
    rows = []
    for model in found:
        if not _matches(model.id, pattern):
            continue
        rows.append({"ref": f"{source}:{model.id}", "source": source,
                     "modality": modality_of_task(model.pipeline_tag, model.library_name),
                     "task": model.pipeline_tag, "library": model.library_name, "downloads": model.downloads})
    return rows
