"""``hubtune.Cache``: an embedding store as a Python object, with what the store commands do.

Each method opens the store for the call and closes it after (readers never block one another; one
process writes at a time), so a ``Cache`` is cheap to make, to keep and to pass around, and a path is
enough to rebuild one (``os.fspath(cache)`` is its folder: any call that takes a cache folder takes a
``Cache`` too). ``hubtune extract``, ``export`` and ``cache ls|verify|errors|prune`` call these methods.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.backbone import LoadOptions
from hubtune.embedding import load_options
from hubtune.errors import StoreError, option

if TYPE_CHECKING:
    import numpy as np

    from hubtune.extract.options import ExtractSummary
    from hubtune.heads.protocol import HeadMethods
    from hubtune.store import EmbeddingStore, VerifyReport


@dataclass
class Vectors:
    """A dataset's vectors as ``export`` writes them: the rows that have a vector, in dataset order."""

    array: "np.ndarray"  # (rows, dim) float32
    keys: list[str]  # content keys, hex
    labels: list[str | None]
    splits: list[str]
    origins: list[str]
    fingerprint: str
    missing: int = 0  # items of the dataset without a vector (failed, or not extracted yet)

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.array.shape[1])


@dataclass
class DatasetInfo:
    """A dataset the store records: its items, classes and splits, and the vectors extracted for it."""

    name: str
    items: int
    classes: list[str]
    splits: dict[str, int]
    fingerprints: list[str] = field(default_factory=list)  # those it was extracted with
    models: list[str] = field(default_factory=list)  # source:model of each of them


def workers_for(value: int | str, modality: str) -> int:
    """``workers``: a whole number, or ``"auto"`` (0 for text, half the CPUs, at most 8, for images), as ``--workers``."""
    if value == "auto":  # text preprocessing (tokenising) is cheap next to the model; image decoding is not
        return 0 if modality == "text" else max(1, min(8, (os.cpu_count() or 2) // 2))
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"workers={value!r}; expected 'auto' or a whole number")
    return value


class Cache:
    """The embedding store at ``path`` (default: hubtune's default cache, ``$HUBTUNE_HOME/cache``)."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        from hubtune.constants import default_cache_dir

        self.path = Path(path).expanduser() if path is not None else default_cache_dir()

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cache) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    def store(self, readonly: bool = True) -> "EmbeddingStore":
        """The store itself (:class:`hubtune.store.EmbeddingStore`; close it, or use it in a ``with``)."""
        from hubtune.store import EmbeddingStore

        return EmbeddingStore(self.path, readonly=readonly)

    # -- what is there ------------------------------------------------------------------------------
    def datasets(self) -> list[DatasetInfo]:
        """The datasets the store records, with what each holds."""
        with self.store() as store:
            kinds = {fp: meta["fields"] for fp, meta in store.fingerprints().items()}
            found = []
            for name, manifest in store.manifests():
                recorded = store.recorded_fingerprints(name)
                found.append(DatasetInfo(
                    name=name, items=len(manifest["keys"]),
                    classes=sorted({str(label) for label in manifest["labels"] if label is not None}),
                    splits=dict(sorted(Counter(manifest["splits"]).items())), fingerprints=recorded,
                    models=[f"{kinds[fp]['source']}:{kinds[fp]['model']}" for fp in recorded if fp in kinds]))
        return found

    def fingerprints(self) -> list[dict[str, Any]]:
        """One row per fingerprint: model, options, dtype, dim, vector and error counts, bytes (``cache ls``)."""
        with self.store() as store:
            rows = []
            for fingerprint, meta in store.fingerprints().items():
                fields = meta["fields"]
                count = store.count(fingerprint)
                itemsize = 2 if meta["dtype"] == "float16" else 4
                rows.append({
                    "fingerprint": fingerprint, "model": f"{fields['source']}:{fields['model']}",
                    "revision": fields["revision"], "layer": fields["layer"], "pool": fields["pool"],
                    "precision": fields["precision"], "dtype": meta["dtype"], "dim": meta["dim"],
                    "vectors": count, "bytes": count * meta["dim"] * itemsize,
                    "errors": len(store.errors(fingerprint)),
                })
        return rows

    def fingerprint(self, model: str, dataset: str, *, stored_dtype: str | None = None,
                    options: LoadOptions | None = None, **model_options: Any) -> str:
        """The fingerprint of ``dataset``'s vectors for ``model`` + options, found as ``export`` finds it."""
        from hubtune.store.lookup import find_fingerprint

        chosen = load_options(options, model_options, "fingerprint")
        with self.store() as store:
            return find_fingerprint(store, model, dataset, chosen, stored_dtype)

    def vectors(self, model: str, dataset: str, *, stored_dtype: str | None = None,
                options: LoadOptions | None = None, **model_options: Any) -> Vectors:
        """``dataset``'s vectors for ``model`` with the options ``extract`` was given (unset ones match any
        value), found as ``export`` finds them; ``array`` equals export's ``embeddings.npy``."""
        from hubtune.store.lookup import find_fingerprint
        from hubtune.store.vectors import load_dataset_vectors

        chosen = load_options(options, model_options, "vectors")
        with self.store() as store:
            fingerprint = find_fingerprint(store, model, dataset, chosen, stored_dtype)
            data = load_dataset_vectors(store, fingerprint, dataset)
        return Vectors(data.vectors, data.keys, data.labels, data.splits, data.origins, fingerprint, data.missing)

    def errors(self, fingerprint: str | None = None, dataset: str | None = None) -> list[dict[str, Any]]:
        """Items that could not be embedded (``fingerprint``, ``key``, ``origin``, ``reason``); of one
        fingerprint, and/or shown by ``dataset``'s own files (``cache errors``)."""
        with self.store() as store:
            own = None if dataset is None else _origins_by_key(store.manifest(dataset))
            return [
                {"fingerprint": fp, "key": key.hex(), "origin": origin, "reason": record.get("reason")}
                for fp in ([fingerprint] if fingerprint else store.fingerprints())
                for key, record in store.errors(fp).items()
                for origin in (own.get(key.hex(), []) if own is not None else [record.get("origin")])
            ]

    def verify(self) -> "VerifyReport":
        """Every block's CRC, every key's location, every manifest complete under the fingerprints it was
        extracted with (``cache verify``); ``.ok`` is False on any damage."""
        with self.store() as store:
            return store.verify()

    # -- what changes it ------------------------------------------------------------------------------
    def extract(self, model: str, data: str | os.PathLike[str], dataset: str | None = None, *,
                options: LoadOptions | None = None, batch_size: int = 64, workers: int | str = 0,
                stored_dtype: str = "float16", max_failures: float | None = None, refresh: bool = False,
                compile: bool = False, progress: bool = False, streams: int | None = None,
                shard: tuple[int, int] | None = None, **model_options: Any) -> "ExtractSummary":
        """``hubtune extract MODEL DATA``: embed the dataset at ``data`` into the store under the name
        ``dataset`` (default: its file or folder name); what the store holds is skipped. Returns the
        :class:`~hubtune.extract.ExtractSummary`; past ``max_failures`` raises ``TooManyFailures`` (its
        ``summary`` is the report)."""
        from hubtune.data import open_dataset
        from hubtune.extract import extract
        from hubtune.extract.options import ExtractOptions

        chosen = load_options(options, model_options, "extract")
        opened = open_dataset(Path(data))
        run = ExtractOptions(options=chosen, dataset_name=dataset, batch_size=batch_size, stored_dtype=stored_dtype,
                             workers=workers_for(workers, opened.modality), max_failures=max_failures, refresh=refresh,
                             compile=compile, progress=progress, streams=streams)
        with self.store(readonly=False) as store:
            return extract(model, opened, store, run, shard=shard)

    def export(self, model: str, dataset: str, out: str | os.PathLike[str], *, stored_dtype: str | None = None,
               options: LoadOptions | None = None, **model_options: Any) -> dict[str, Any]:
        """``hubtune export``: ``out/embeddings.npy`` (float32, dataset order) and ``out/items.jsonl``; returns
        ``rows``, ``dim``, ``missing``, ``fingerprint``, ``path``."""
        from hubtune.store.lookup import find_fingerprint
        from hubtune.store.vectors import export_dataset

        chosen = load_options(options, model_options, "export")
        if Path(out).exists() and not Path(out).is_dir():  # what the CLI's --out refuses before any work
            raise StoreError(f"{option('out', out)} is a file; give a folder for embeddings.npy and items.jsonl")
        with self.store() as store:
            fingerprint = find_fingerprint(store, model, dataset, chosen, stored_dtype)
            return export_dataset(store, fingerprint, dataset, Path(out))

    def prune(self, fingerprint: str | None = None, dataset: str | None = None) -> dict[str, Any]:
        """Drop a fingerprint (vectors, error records) and/or a dataset manifest, and their FAISS indexes;
        ``{"removed": entries, "indexes": [paths]}``. A name the store does not hold is refused."""
        from hubtune.index import INDEX_FOLDER, remove_indexes

        if fingerprint is None and dataset is None:
            raise StoreError("say what to drop: fingerprint=... and/or dataset=... (see Cache.fingerprints())")
        with self.store(readonly=False) as store:
            removed = store.prune(fingerprint=fingerprint, dataset=dataset)
        folder = self.path / INDEX_FOLDER
        indexes = [*([] if fingerprint is None else remove_indexes(folder, fingerprint=fingerprint.lower())),
                   *([] if dataset is None else remove_indexes(folder, dataset=dataset))]
        return {"removed": removed, "indexes": [str(path) for path in indexes]}

    # -- the rest of the API, through this cache --------------------------------------------------------
    def embed(self, model: Any, inputs: Any, **settings: Any) -> Any:
        """:func:`hubtune.embed` through this cache."""
        from hubtune.embedding import embed

        return embed(model, inputs, cache=self, **settings)

    def train_head(self, model: str, dataset: str, head: str = "linear", **params: Any) -> "HeadMethods":
        """:func:`hubtune.train_head` on this cache's vectors."""
        from hubtune.heads.fit import train_head

        return train_head(self, model, dataset, head, **params)


def _origins_by_key(manifest: dict[str, list]) -> dict[str, list[str]]:
    """A dataset's files by content key, to show a failed item by the dataset's own files.

    An error record is shared by every file with the same bytes, in any dataset, and keeps the
    origin of the first one to fail, which may be another dataset's file.
    """
    origins: dict[str, list[str]] = {}
    for key, origin in zip(manifest["keys"], manifest["origins"]):
        origins.setdefault(key, []).append(origin)
    return origins


def as_cache(cache: "Cache | str | os.PathLike[str] | None") -> Cache:
    """A :class:`Cache` for what a call was given (None: the default cache)."""
    return cache if isinstance(cache, Cache) else Cache(cache)

