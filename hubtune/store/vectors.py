"""Reading vectors back: a dataset's vectors in dataset order, and exporting them.

Which fingerprint to read is :mod:`hubtune.store.lookup`'s question.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.atomic import atomic_write, staged
from hubtune.store.lmdb_store import EmbeddingStore
from hubtune.store.manifests import manifest_keys

if TYPE_CHECKING:
    import numpy as np


_EXPORT_PIECE_BYTES = 8 << 20  # float32 bytes gathered per piece of an export


@dataclass
class DatasetVectors:
    """A dataset's stored vectors in dataset order, with the rows' annotations."""

    vectors: "np.ndarray"  # (rows, dim) float32
    keys: list[str]
    labels: list[str | None]
    splits: list[str]
    origins: list[str]
    missing: int  # items with no vector (failed, or not extracted yet)


def _present(store: EmbeddingStore, fingerprint: str, dataset: str) -> tuple[dict[str, list], "np.ndarray", "np.ndarray"]:
    """The manifest, the positions of items that have a vector, and those vectors' locations."""
    import numpy as np

    manifest = store.manifest(dataset)
    locations = store.locate(fingerprint, manifest_keys(manifest))
    present = np.flatnonzero(locations[:, 0] >= 0)
    return manifest, present, locations[present]


def load_dataset_vectors(store: EmbeddingStore, fingerprint: str, dataset: str, dtype: str = "float32") -> DatasetVectors:
    """Every item of ``dataset`` that has a vector, in dataset order (duplicates repeated).

    ``dtype="float16"`` keeps large rows (split-point activations) at half the memory.
    """
    manifest, present, locations = _present(store, fingerprint, dataset)
    pick = present.tolist()
    return DatasetVectors(
        vectors=store.gather(fingerprint, locations, dtype),
        keys=[manifest["keys"][i] for i in pick],
        labels=[manifest["labels"][i] for i in pick],
        splits=[manifest["splits"][i] for i in pick],
        origins=[manifest["origins"][i] for i in pick],
        missing=len(manifest["keys"]) - len(pick),
    )


def _json_column(values: list, rows: list[int]) -> list[str]:
    """JSON literals of ``values[rows]`` through the C string encoder (strings, or null)."""
    from json.encoder import encode_basestring_ascii as encode

    return ["null" if values[i] is None else encode(str(values[i])) for i in rows]


def _write_items(path: Path, manifest: dict[str, list], rows: list[int]) -> None:
    keys = [manifest["keys"][i] for i in rows]
    labels, splits, origins = (_json_column(manifest[c], rows) for c in ("labels", "splits", "origins"))
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(
            f'{{"key": "{key}", "label": {label}, "split": {split}, "origin": {origin}}}\n'
            for key, label, split, origin in zip(keys, labels, splits, origins)
        )


def export_dataset(store: EmbeddingStore, fingerprint: str, dataset: str, out: str | Path) -> dict[str, Any]:
    """Write ``embeddings.npy`` (float32, dataset order) and ``items.jsonl`` to ``out``.

    Streams at memory speed with flat memory: vectors are gathered in pieces of about 8 MB into
    two reused buffers, one piece written while the next fills, and the JSON lines are formatted
    in a thread beside them (C string encoder). Each file appears whole or not at all (temporary
    name, then rename); like ``np.save`` the bytes go to the OS without an fsync, since the store
    can always export them again.
    """
    import numpy as np

    from concurrent.futures import ThreadPoolExecutor

    manifest, present, locations = _present(store, fingerprint, dataset)
    dim = store.fingerprints()[fingerprint]["dim"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = min(len(present), max(1, _EXPORT_PIECE_BYTES // (4 * max(dim, 1))))
    buffers = [np.empty((rows, dim), dtype=np.float32) for _ in range(2)]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (len(present), dim)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        lines = pool.submit(atomic_write, out / "items.jsonl",
                            lambda temporary: _write_items(temporary, manifest, present.tolist()), False)
        with staged(out / "embeddings.npy", durable=False) as temporary, open(temporary, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            written = None
            for piece in store.gather_chunks(fingerprint, locations, buffers):
                if written is not None:
                    written.result()  # the buffer the next piece fills is free again
                written = pool.submit(handle.write, piece)
            if written is not None:
                written.result()
        lines.result()
    return {"rows": int(len(present)), "dim": int(dim), "missing": len(manifest["keys"]) - len(present),
            "fingerprint": fingerprint, "path": str(out)}
