"""Using a saved head on new inputs: its backbone, the same cache, the same fingerprint.

What ``hubtune predict`` and ``hubtune eval`` run, and what a head's Python methods
(:class:`hubtune.heads.protocol.HeadMethods`) run: raw inputs are embedded by
:mod:`hubtune.embedding` (through the store when there is one, keyed as ``extract`` keys them).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hubtune.backbone import Backbone, LoadOptions
from hubtune.embedding import Settings, embed_items, shown, to_items
from hubtune.errors import HeadError
from hubtune.heads.features import metrics
from hubtune.heads.protocol import Head, HeadMethods
from hubtune.heads.trained import TrainedHead

logger = logging.getLogger("hubtune")


def load_head(folder: str | os.PathLike[str], cache: "str | os.PathLike[str] | None" = None) -> HeadMethods:
    """The head saved in ``folder``: a head on frozen vectors (linear, mlp, knn), a zero-shot head (class
    vectors from a text tower) or a fine-tuned top (``hubtune finetune``). ``cache`` (a folder or a
    :class:`hubtune.Cache`; None: no store) is what its methods embed raw inputs through."""
    import json

    manifest = Path(folder) / "head.json"
    kind = json.loads(manifest.read_text()).get("kind") if manifest.is_file() else None
    head: HeadMethods
    if kind == "finetune":
        from hubtune.finetune.saved import FinetunedHead

        head = FinetunedHead.load(Path(folder))
    elif kind == "zeroshot":
        from hubtune.heads.zeroshot import ZeroShotHead

        head = ZeroShotHead.load(Path(folder))
    else:
        head = TrainedHead.load(Path(folder))
    head.cache = cache
    return head


def head_backbone(head: Head, **overrides: Any) -> Backbone:
    """The backbone the head was trained on, with the options recorded in it; checked by fingerprint.

    For a fine-tuned head this is its frozen prefix, with the trained top loaded into the head.
    """
    from hubtune.api import load_backbone

    if not head.model.get("ref"):
        raise HeadError("this head records no backbone (it was fitted on vectors, e.g. by "
                        "hubtune.sklearn.HeadClassifier), so it cannot embed inputs: give it vectors "
                        "(head.predict_proba(array)), or train it with `hubtune train` / hubtune.train_head")
    options = LoadOptions(**{**head.model.get("options", {}), **overrides})
    backbone = load_backbone(head.model["ref"], options)
    if head.kind == "finetune":
        backbone = head.bind(backbone)  # type: ignore[attr-defined]
    for dtype in ("float16", "float32"):
        if backbone.fingerprint(dtype) == head.model["fingerprint"]:
            return backbone
    raise HeadError(
        f"{head.model['ref']} now embeds as {backbone.fingerprint()} but the head was trained on "
        f"{head.model['fingerprint']}: the model's revision or preprocessing changed; pin the revision"
    )


def _backbone(head: Head) -> Backbone:
    """The head's backbone: kept on the head when it keeps one (HeadMethods), else loaded for the call."""
    return head.backbone() if isinstance(head, HeadMethods) else head_backbone(head)


def stored_dtype(head: Head, backbone: Backbone) -> str:
    return "float16" if backbone.fingerprint("float16") == head.model["fingerprint"] else "float32"


def given_vectors(head: Head, inputs: Any) -> np.ndarray | None:
    """``inputs`` as float32 vectors when they are a 2-D numeric array (checked against the head's width)."""
    if not isinstance(inputs, np.ndarray) or inputs.dtype.kind not in "fiu":
        return None
    if inputs.ndim != 2:
        raise HeadError(f"vectors must be a 2-D array (inputs, dim), got shape {inputs.shape}")
    dim = getattr(head, "dim", None)
    if dim is not None and inputs.shape[1] != dim:
        raise HeadError(f"the head reads {dim}-d vectors, the array has {inputs.shape[1]} columns")
    return inputs.astype(np.float32, copy=False)


def embed_for(head: Head, inputs: Sequence[Any], cache: "str | os.PathLike[str] | None") -> np.ndarray:
    """Vectors of raw inputs by the head's backbone, through ``cache`` when given (keyed by content, as
    ``extract`` keys them); without one rounded to the stored dtype the head was trained on. An input
    that cannot be embedded stops the call with every such input's name and reason."""
    backbone = _backbone(head)
    dtype = stored_dtype(head, backbone)
    values = list(inputs)
    items, failed = to_items(values, backbone.modality)
    names = [shown(value) for value in values]
    vectors, failed = embed_items(items, names, failed, lambda: backbone, cache, None, Settings(stored_dtype=dtype))
    if failed:
        raise HeadError(f"{len(failed)} of the inputs cannot be embedded: "
                        + "; ".join(f"{failure.input}: {failure.reason}" for failure in failed))
    return vectors if cache is not None else vectors.astype(dtype).astype(np.float32)


def head_probabilities(head: Head, inputs: Any, cache: "str | os.PathLike[str] | None") -> np.ndarray:
    """``(N, classes)`` for raw inputs or for vectors already embedded (see :class:`HeadMethods`)."""
    vectors = given_vectors(head, inputs)
    if vectors is not None:
        if head.kind == "finetune":
            _backbone(head)  # binds the trained top
        return head.probabilities(vectors)
    if isinstance(inputs, (str, bytes, Path)):
        raise HeadError("give the inputs as a list (or an array of vectors), not a single input")
    return head.probabilities(embed_for(head, inputs, cache), head.model["fingerprint"])


def predict(head: Head, inputs: Sequence[str], cache: "str | os.PathLike[str] | None") -> list[dict[str, Any]]:
    """``{input, label, score}`` per input (a text, or an image path for an image model): ``hubtune predict``."""
    probabilities = head_probabilities(head, list(inputs), cache)
    return [
        {"input": text, "label": head.classes[int(p.argmax())], "score": round(float(p.max()), 6)}
        for text, p in zip(inputs, probabilities)
    ]


def evaluate(head: Head, data: str | os.PathLike[str], cache: "str | os.PathLike[str] | None",
             batch_size: int = 64) -> dict[str, Any]:
    """Embed ``data`` through the cache with the head's backbone (recorded there as ``eval-NAME``; without
    a cache, through a scratch store), then score the head on it: ``hubtune eval``. A dataset with a
    ``test`` split is scored on that split only (``split`` in the report: ``test`` or ``all``). The
    model is loaded only for items the store does not hold yet."""
    if cache is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="hubtune-eval-") as scratch:
            return evaluate(head, data, scratch, batch_size)
    from hubtune.data import open_dataset
    from hubtune.embedding import vectors_by_key
    from hubtune.errors import DatasetError
    from hubtune.extract.run import known_modality, manifest_of
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import load_dataset_vectors

    dataset = open_dataset(Path(data))
    modality = known_modality(dataset)
    fingerprint = head.model["fingerprint"]
    loaded: list[Backbone] = []

    def backbone() -> Backbone:
        """Loaded only when an item is not in the store yet (or to bind a fine-tuned top)."""
        if not loaded:
            loaded.append(_backbone(head))
            if modality not in (None, loaded[0].modality):
                raise DatasetError(f"{dataset.location} holds {dataset.modality}s but the head's model "
                                   f"{head.model['ref']} embeds {loaded[0].modality}s")
        return loaded[0]

    if modality is None or head.kind == "finetune":
        backbone()
    name = dataset.name(f"eval-{dataset.location.stem}")
    items = dataset.items()
    unique = list({item.key: item for item in items}.values())
    with EmbeddingStore(Path(cache)) as store:
        known_dtype = store.fingerprints().get(fingerprint, {}).get("dtype")
        settings = Settings(stored_dtype=known_dtype or stored_dtype(head, backbone()), batch_size=batch_size)
        # no request memo: the head's backbone (a fine-tuned prefix, say) is not what its options load
        vectors_by_key(unique, backbone, store, None, settings, fingerprint=fingerprint)
        store.put_manifest(name, manifest_of(items))  # recorded last, as extract does
        vectors = load_dataset_vectors(store, fingerprint, name)
    known = {label: i for i, label in enumerate(head.classes)}
    # a dataset with a `test` split is scored on it (its train/val rows are what a head is fitted on)
    split = "test" if "test" in vectors.splits else None
    rows = [i for i, label in enumerate(vectors.labels)
            if label in known and (split is None or vectors.splits[i] == split)]
    if not rows:
        raise HeadError(f"no item of {data} has a label the head knows ({', '.join(head.classes)})")
    y = np.array([known[str(vectors.labels[i])] for i in rows])
    report = metrics(head.probabilities(vectors.vectors[rows], fingerprint), y, head.classes)
    report["split"] = split or "all"
    in_split = [i for i in range(len(vectors.labels)) if split is None or vectors.splits[i] == split]
    report["skipped"] = len(in_split) - len(rows) + vectors.missing
    unknown = [str(vectors.labels[i]) for i in in_split if vectors.labels[i] is not None and vectors.labels[i] not in known]
    if unknown:  # scored rows only: say so, or the accuracy reads as the whole dataset's
        logger.warning("%d items not scored: their labels are not among the head's classes (%s): %s",
                       len(unknown), ", ".join(head.classes), ", ".join(sorted(set(unknown))[:10]))
    return report
