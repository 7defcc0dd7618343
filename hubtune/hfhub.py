"""Fetching from the Hugging Face Hub safely: one place for snapshots, offline mode and file policy.

Used by every source whose weights live on the Hub (``hf`` and timm's ``hf-hub:`` weights). Only
files that cannot run code are fetched (configs, tokenizers, safetensors); ``.py`` files come only
when remote code was explicitly allowed, and pickled checkpoints (``.bin``, ``.pt``, ``.ckpt``)
never. A rate-limited (429) or briefly failing (5xx) Hub is asked again a bounded number of times,
and every failure reaches the user as one line (``tests/test_pull_online.py`` runs all of it against
a local Hub).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from hubtune.errors import ModelNotFoundError, OfflineError, UnsafeModelError, option
from hubtune.fingerprint import hash_file

SAFE_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")
CODE_PATTERNS = ("*.py",)

logger = logging.getLogger("hubtune")


def hub_cache_dir() -> Path:
    """The Hub cache in force (``HF_HUB_CACHE``, ``HF_HOME``/hub, or the default)."""
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str) -> Path:
    """Where the Hub cache keeps ``repo_id`` (``models--owner--name``)."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def cached_commit(repo_id: str, revision: str = "main") -> str | None:
    """The commit a cached branch points to, or None when the repository is not cached."""
    ref_file = repo_folder(repo_id) / "refs" / revision
    if ref_file.is_file():
        return ref_file.read_text().strip() or None
    return None


def snapshot(
    repo_id: str,
    revision: str | None,
    *,
    offline: bool,
    allow_patterns: Sequence[str] = SAFE_PATTERNS,
    asked: str | None = None,
    instead: str = "",
) -> tuple[Path, str]:
    """Download (or, offline, find) a repository snapshot; return ``(folder, commit sha)``.

    ``asked``: the reference as the user gave it, for the ``hubtune pull`` the offline error suggests
    (default ``hf:<repo>@<revision>``); ``instead``: another way out that error can offer. A Hub that
    answers 429 (rate limited) or 5xx is asked again, a bounded number of times (:func:`_with_retry`).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        from httpx2 import TransportError  # huggingface_hub 2.x talks through httpx2
    except ImportError:  # older releases use requests, whose errors are OSErrors
        TransportError = OSError  # type: ignore[assignment,misc]

    where = f"{repo_id}@{revision or 'main'}"
    again = f"`hubtune pull {asked or 'hf:' + where.removesuffix('@main')}`"
    try:
        folder = _with_retry(where, lambda: snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(allow_patterns),
            local_files_only=offline,
            cache_dir=str(hub_cache_dir()),
        ), retry=not offline)
    except GatedRepoError as exc:
        from huggingface_hub import constants

        raise ModelNotFoundError(
            f"{where} is gated on the Hub: accept its terms at {constants.ENDPOINT}/{repo_id}, then log in "
            "(hf auth login) or set HF_TOKEN"
        ) from exc
    except RevisionNotFoundError as exc:
        raise ModelNotFoundError(f"{where}: the Hub repository has no such revision") from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(f"{where}: no such repository on the Hub (or it is private)") from exc
    except LocalEntryNotFoundError as exc:
        if offline and type(exc).__name__ == "IncompleteSnapshotError":
            raise OfflineError(
                f"{where} is only partly in the local hub cache ({hub_cache_dir()}: an interrupted download?) and "
                f"offline mode is on; finish it with network ({again}) or unset HF_HUB_OFFLINE"
            ) from exc
        if offline:
            raise OfflineError(
                f"{where} is not in the local hub cache ({hub_cache_dir()}) and offline mode is on; "
                f"fetch it once with network ({again}) or unset "
                f"HF_HUB_OFFLINE{instead}"
            ) from exc
        raise OfflineError(_unreachable(where, exc)) from exc
    except HfHubHTTPError as exc:
        raise OfflineError(_unreachable(where, exc)) from exc
    except TransportError as exc:
        raise OfflineError(
            f"{where}: the download broke off ({type(exc).__name__}: {_first_line(exc)}); run the same command "
            "again (files already complete are kept)"
        ) from exc
    return Path(folder), Path(folder).name


#: what a Hub answer must be for the whole snapshot to be asked for again: rate limited, or briefly down
RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
RETRY_ATTEMPTS = 4
MAX_RETRY_WAIT = 60.0


def _hub_status(exc: BaseException | None) -> tuple[int, float | None] | None:
    """``(status, Retry-After seconds or None)`` when ``exc``, or an error behind it, is a retryable Hub answer."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        response: Any = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status in RETRY_STATUSES:
            after = str(response.headers.get("Retry-After", "")).strip()
            return int(status), float(after) if after.isdigit() else None
        exc = exc.__cause__ or exc.__context__
    return None


def _with_retry(where: str, fetch: Callable[[], str], *, retry: bool) -> str:
    """``fetch()``, again after a wait when the Hub answers a status in :data:`RETRY_STATUSES`.

    huggingface_hub retries 429 on the file listing, the file metadata and the download itself, but not
    on the model-info request ``snapshot_download`` starts with (a 429 there ends in
    ``LocalEntryNotFoundError``): this covers that one, and whatever gave up. ``Retry-After`` is honoured
    (capped at :data:`MAX_RETRY_WAIT`), else the wait doubles from 1 s; :data:`RETRY_ATTEMPTS` in all.
    """
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    for attempt in range(1, RETRY_ATTEMPTS + 1):
        try:
            return fetch()
        except (LocalEntryNotFoundError, HfHubHTTPError) as exc:
            busy = _hub_status(exc) if retry else None
            if busy is None or attempt == RETRY_ATTEMPTS:
                raise
            status, after = busy
            wait = min(MAX_RETRY_WAIT, after if after is not None else 2.0 ** (attempt - 1))
            logger.warning("%s: the Hub answered %d; asking again in %.0f s (attempt %d of %d)",
                           where, status, wait, attempt + 1, RETRY_ATTEMPTS)
            time.sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def _first_line(exc: BaseException) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _unreachable(where: str, exc: BaseException) -> str:
    """The one-line reason a snapshot could not be fetched online."""
    busy = _hub_status(exc)
    if busy is not None and busy[0] == 429:
        return (f"{where}: the Hub kept answering 429 Too Many Requests (rate limited) after {RETRY_ATTEMPTS} "
                "attempts; wait a few minutes and run the command again, or log in (hf auth login) for a higher limit")
    if busy is not None:
        return f"{where}: the Hub kept answering HTTP {busy[0]} after {RETRY_ATTEMPTS} attempts; try again later"
    return (f"{where} could not be fetched (the Hub is unreachable: {_first_line(exc)}) and is not in the local "
            f"cache ({hub_cache_dir()}); check the network (or HF_ENDPOINT) and run the command again")


def require_safetensors(folder: Path, what: str) -> list[Path]:
    """The snapshot's safetensors files; refuse a repository that only has pickled weights."""
    found = sorted(folder.rglob("*.safetensors"))
    if not found:
        raise UnsafeModelError(
            f"{what} has no .safetensors weights; hubtune does not unpickle .bin/.pt checkpoints. "
            f"Convert them to safetensors, or load a converted file with {option('weights', 'PATH')}."
        )
    return found


def content_commit(folder: Path) -> str:
    """A 40-hex name for a folder's exact bytes (sha1 over sorted relative paths and contents)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        hash_file(path, digest)
    return digest.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def seed_snapshot(repo_id: str, folder: Path, commit: str | None = None, branch: str = "main") -> str:
    """Place a folder of repository files in the Hub cache as a snapshot, and point ``branch`` at it.

    Afterwards every Hub client finds ``repo_id`` offline through its ordinary cache code. Used for
    the embedded default model and for tiny models built in tests. ``commit`` defaults to
    :func:`content_commit`. Writes are atomic (staging folder + rename), so racing seeders are safe.
    """
    commit = commit or content_commit(folder)
    repo = repo_folder(repo_id)
    target = repo / "snapshots" / commit
    if not target.is_dir():
        (repo / "snapshots").mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".seed-", dir=repo / "snapshots"))
        for path in folder.rglob("*"):
            if path.is_file():
                dst = staging / path.relative_to(folder)
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(path, dst)
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    ref_tmp = repo / "refs" / f".{branch}-{os.getpid()}"
    ref_tmp.write_text(commit)
    os.replace(ref_tmp, repo / "refs" / branch)
    return commit
