"""Using a saved head on new inputs: its backbone, the same cache, the same fingerprint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hubtune.backbone import Backbone, LoadOptions
from hubtune.data import content_key
from hubtune.errors import HeadError, InputError
from hubtune.heads.features import metrics
from hubtune.heads.protocol import Head
from hubtune.heads.trained import TrainedHead
from hubtune.store import EmbeddingStore

logger = logging.getLogger("hubtune")


def load_head(folder: str | Path) -> Head:
    """A saved head folder: a head on frozen vectors, a zero-shot head (class vectors from a text tower)
    or a fine-tuned top (``hubtune finetune``)."""
    import json

    manifest = Path(folder) / "head.json"
    kind = json.loads(manifest.read_text()).get("kind") if manifest.is_file() else None
    if kind == "finetune":
        from hubtune.finetune.saved import FinetunedHead

        return FinetunedHead.load(folder)
    if kind == "zeroshot":
        from hubtune.heads.zeroshot import ZeroShotHead

        return ZeroShotHead.load(folder)
    return TrainedHead.load(folder)


def head_backbone(head: Head, **overrides: Any) -> Backbone:
    """The backbone the head was trained on, with the options recorded in it; checked by fingerprint.

    For a fine-tuned head this is its frozen prefix, with the trained top loaded into the head.
    """
    from hubtune.api import load_backbone

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


def stored_dtype(head: Head, backbone: Backbone) -> str:
    return "float16" if backbone.fingerprint("float16") == head.model["fingerprint"] else "float32"


def embed_through_store(store: EmbeddingStore, backbone: Backbone, dtype: str, raws: Sequence[Any],
                        names: Sequence[str]) -> np.ndarray:
    """Vectors for raw inputs, reusing cached ones and caching the rest (keyed by content hash).

    An input the preprocessor refuses stops the call with every such input's name and reason.
    """
    fingerprint = backbone.fingerprint(dtype)
    keys = [content_key(raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)) for raw in raws]
    present = store.has(fingerprint, keys)
    missing = [i for i, has in enumerate(present) if not has]
    if missing:
        samples = backbone.preprocessor.prepare_many([raws[i] for i in missing])
        bad = [f"{names[i]!r}: {sample}" for i, sample in zip(missing, samples) if isinstance(sample, InputError)]
        if bad:
            raise HeadError(f"{len(bad)} of the inputs cannot be embedded: " + "; ".join(bad))
        vectors = backbone.embed_samples(samples).astype(dtype)
        store.register(fingerprint, backbone.fingerprint_fields(dtype), backbone.dim, dtype)
        store.put_batch(fingerprint, [keys[i] for i in missing], vectors)
    return store.get(fingerprint, keys)


def predict(head: Head, inputs: Sequence[str], cache: Path) -> list[dict[str, Any]]:
    """``{input, label, score}`` per input (a text, or an image path for an image model)."""
    backbone = head_backbone(head)
    raws: list[Any] = []
    for text in inputs:
        if backbone.modality == "image":
            path = Path(text).expanduser()
            if not path.is_file():
                raise HeadError(f"{text!r}: an image head predicts from image paths, and there is no such file")
            raws.append(path.read_bytes())
        else:
            raws.append(text)
    with EmbeddingStore(cache) as store:
        vectors = embed_through_store(store, backbone, stored_dtype(head, backbone), raws, inputs)
    probabilities = head.probabilities(vectors, head.model["fingerprint"])
    return [
        {"input": text, "label": head.classes[int(p.argmax())], "score": round(float(p.max()), 6)}
        for text, p in zip(inputs, probabilities)
    ]


def evaluate(head: Head, data: str | Path, cache: Path, batch_size: int = 64) -> dict[str, Any]:
    """Extract ``data`` through the cache with the head's backbone, then score the head on it."""
    from hubtune.data import open_dataset
    from hubtune.extract import extract
    from hubtune.store.vectors import load_dataset_vectors

    backbone = head_backbone(head)
    dtype = stored_dtype(head, backbone)
    dataset = open_dataset(data)
    name = f"eval-{dataset.location.stem}"
    with EmbeddingStore(cache) as store:
        extract(head.model["ref"], dataset, store, dataset_name=name, backbone=backbone, batch_size=batch_size,
                stored_dtype=dtype, progress=False)
        vectors = load_dataset_vectors(store, head.model["fingerprint"], name)
    known = {label: i for i, label in enumerate(head.classes)}
    rows = [i for i, label in enumerate(vectors.labels) if label in known]
    if not rows:
        raise HeadError(f"no item of {data} has a label the head knows ({', '.join(head.classes)})")
    y = np.array([known[vectors.labels[i]] for i in rows])
    report = metrics(head.probabilities(vectors.vectors[rows], head.model["fingerprint"]), y, head.classes)
    report["skipped"] = len(vectors.labels) - len(rows) + vectors.missing
    unknown = [label for label in vectors.labels if label is not None and label not in known]
    if unknown:  # scored rows only: say so, or the accuracy reads as the whole dataset's
        logger.warning("%d items not scored: their labels are not among the head's classes (%s): %s",
                       len(unknown), ", ".join(head.classes), ", ".join(sorted(set(unknown))[:10]))
    return report
