"""Nearest neighbours of a dataset: its FAISS index kept beside the store, and search over it.

Index files live in ``<cache>/indexes/``, named by dataset, fingerprint, kind and metric. The
sidecar's identity covers the fingerprint, the dataset and a hash of its keys in order, so an
index built before the dataset changed, or for another model, is rebuilt instead of trusted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hubtune.errors import QueryError
from hubtune.index import faiss_index as ix
from hubtune.store import EmbeddingStore
from hubtune.store.vectors import DatasetVectors, load_dataset_vectors

if TYPE_CHECKING:
    import numpy as np

    from hubtune.backbone import Backbone


@dataclass
class DatasetIndex:
    index: Any
    spec: ix.IndexSpec
    path: Path
    data: DatasetVectors
    built: bool  # False when a valid saved index was reused


def _identity(fingerprint: str, dataset: str, data: DatasetVectors) -> dict[str, Any]:
    keys_sha = hashlib.sha256("".join(data.keys).encode()).hexdigest()
    return {"fingerprint": fingerprint, "dataset": dataset, "rows": len(data.keys), "keys_sha256": keys_sha}


def ensure_index(
    store: EmbeddingStore, fingerprint: str, dataset: str, *, kind: str = "auto", metric: str = "cosine",
    max_memory: int = 4 << 30, nprobe: int | None = None, ef_search: int | None = None, rebuild: bool = False,
) -> DatasetIndex:
    """Load the dataset's index if a valid one is saved, else build and save it."""
    data = load_dataset_vectors(store, fingerprint, dataset)
    if not len(data.keys):
        raise ix.IndexOptionError(f"dataset {dataset!r} has no vectors under fingerprint {fingerprint}")
    spec = ix.choose_spec(len(data.keys), data.vectors.shape[1], kind, metric, max_memory)
    path = store.path / ix.INDEX_FOLDER / f"{dataset}-{fingerprint[:16]}-{spec.kind}-{metric}.faiss"
    identity = _identity(fingerprint, dataset, data)
    loaded = None if rebuild else ix.load(path, identity)
    if loaded is not None:
        index, saved = loaded
        built = False
    else:
        index, saved, built = ix.build(data.vectors, spec), spec, True
    tuned = replace(saved, nprobe=nprobe or saved.nprobe, ef_search=ef_search or saved.ef_search)
    if built or tuned != saved:  # search settings are stored beside the index, as its defaults
        ix.apply_search_params(index, tuned)
        ix.save(index, path, tuned, identity)
    return DatasetIndex(index, tuned, path, data, built)


def _image_path(query: str) -> Path | None:
    """``query`` as an existing image file (by its suffix), else None."""
    from hubtune.data.folders import IMAGE_SUFFIXES

    path = Path(query).expanduser()
    return path if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() else None


def embed_queries(backbone: "Backbone", raws: Sequence[str | bytes]) -> "np.ndarray":
    """Query vectors for raw queries (``bytes``: an image, ``str``: a text). A two-tower model embeds each
    by its own tower, into the space of the dataset's vectors; a one-tower model embeds them as they are.
    What ``search`` and ``hubtune serve`` embed queries with (neither reads a path here)."""
    import numpy as np

    if backbone.tower is None:
        return backbone.embed(list(raws))
    out = np.empty((len(raws), backbone.dim), dtype=np.float32)
    for tower, rows in (("image", [i for i, raw in enumerate(raws) if isinstance(raw, bytes)]),
                        ("text", [i for i, raw in enumerate(raws) if not isinstance(raw, bytes)])):
        if rows:
            out[rows] = backbone.tower_backbone(tower).embed([raws[i] for i in rows])
    return out


def query_vectors(queries: Sequence[str], data: DatasetVectors, backbone_loader: Any) -> "np.ndarray":
    """Vectors for queries: ``row:N`` or ``key:HEX`` name dataset items (no model needed); other
    queries are image paths for an image model, or texts for a text model. For a two-tower model
    (CLIP, SigLIP: ``backbone.tower`` is set) an existing image file goes to its image tower and any
    other query to its text tower, whichever tower embedded the dataset."""
    import numpy as np

    rows: list[int | None] = []
    for query in queries:
        if query.startswith("row:") and query[4:].isdigit():
            row = int(query[4:])
            if row >= len(data.keys):
                raise QueryError(f"{query}: the dataset has {len(data.keys)} rows with vectors")
            rows.append(row)
        elif query.startswith("key:"):
            try:
                rows.append(data.keys.index(query[4:]))
            except ValueError:
                raise QueryError(f"{query}: no item of the dataset has that key") from None
        else:
            rows.append(None)
    out = np.empty((len(queries), data.vectors.shape[1]), dtype=np.float32)
    free = [i for i, row in enumerate(rows) if row is None]
    for i, row in enumerate(rows):
        if row is not None:
            out[i] = data.vectors[row]
    if free:
        backbone: "Backbone" = backbone_loader()
        raw: list[str | bytes] = []
        for i in free:
            if backbone.tower is not None:  # an existing image file to the image tower, the rest as text
                path = _image_path(queries[i])
                raw.append(path.read_bytes() if path is not None else queries[i])
            elif backbone.modality == "image":
                path = Path(queries[i]).expanduser()
                if not path.is_file():
                    raise QueryError(f"{queries[i]!r}: an image model searches by image path, and there is no such file")
                raw.append(path.read_bytes())
            else:
                raw.append(queries[i])
        out[free] = embed_queries(backbone, raw)
    return out


def with_query_prompt(backbone: "Backbone", name: str | None) -> "Backbone":
    """``backbone`` set up to embed queries: with prompt ``name`` (``""``: none), or by default its
    ``query`` prompt when it declares one (as sentence-transformers' ``encode_query``), else the
    prompt the dataset was extracted with."""
    if name == "":
        return backbone.select_prompt(text="")
    if name is not None:
        return backbone.select_prompt(name)
    return backbone.select_prompt("query") if "query" in backbone.prompts() else backbone


def search_dataset(found: DatasetIndex, queries: "np.ndarray", k: int) -> list[list[dict[str, Any]]]:
    """For each query, up to ``k`` items: ``{item (origin), label, score, row}``."""
    scores, ids = ix.search(found.index, queries, k, found.spec.metric)
    return [
        [
            {"item": found.data.origins[i], "label": found.data.labels[i], "score": round(float(s), 6), "row": int(i)}
            for s, i in zip(score_row, id_row)
            if i >= 0
        ]
        for score_row, id_row in zip(scores, ids)
    ]
