"""An IVF index built from a shards folder, the way faiss builds indexes too big for one pass.

faiss' on-disk recipe (``faiss/contrib/ondisk.py``, demo ``demo_ondisk_ivf.py``):

1. train the coarse quantizer (and PQ) once, on a sample: the same rows ``index.build`` would
   draw (:func:`hubtune.index.faiss_index.training_rows`), so the centroids equal a one-piece build's;
2. add each shard into its own copy of the trained, empty index, with the real ids: a vector's
   row in the dataset's export order (items that failed hold no row). The adds are independent:
   here a thread pool runs them, on a cluster any engine can map :func:`add_shard`;
3. merge the shards' inverted lists into one ``merged.ivfdata`` with ``merge_ondisk``; the
   ``merged.index`` beside it names that file, and loads from wherever the folder is moved to
   (``IO_FLAG_ONDISK_SAME_DIR``, which :func:`hubtune.index.faiss_index.load` passes).

The result is searched exactly like an index built in one piece, with vectors read from disk
(memory-mapped) instead of RAM.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hubtune.errors import IndexOptionError
from hubtune.index.faiss_index import (IndexSpec, choose_spec, empty_index, prepare_vectors, save, to_cpu,
                                       training_rows)
from hubtune.scale.merge import check_complete
from hubtune.scale.shards import read_plan

MERGED = "merged.index"


def identity(folder: str | Path) -> dict[str, Any]:
    """What a merged index's sidecar vouches for: the shards' plan and fingerprint."""
    plan = read_plan(folder)
    fingerprint = check_complete(folder, plan)[0]["fingerprint"]
    return {"fingerprint": fingerprint, "dataset": plan.dataset, "keys_digest": plan.keys_digest, "sharded": True}


def _vectors(folder: Path, name: str) -> Any:
    import numpy as np

    return np.load(folder / "emb" / f"{name}.npy", mmap_mode="r")


def _gather(folder: Path, names: list[str], starts: Any, rows: Any, dim: int) -> Any:
    """Dataset rows ``rows`` (in that order) from the shards: one vectorised copy per shard."""
    import numpy as np

    sample = np.empty((len(rows), dim), dtype=np.float32)
    owner = np.searchsorted(starts, rows, side="right") - 1
    for shard in np.unique(owner):
        mask = owner == shard
        sample[mask] = _vectors(folder, names[shard])[rows[mask] - starts[shard]]
    return sample


def add_shard(trained: str | Path, vectors: Any, first_id: int, metric: str, out: str | Path) -> None:
    """Add one shard's vectors, ids ``first_id, first_id + 1, ...``, to a copy of the trained index."""
    import faiss
    import numpy as np

    index = faiss.read_index(str(trained))
    index.add_with_ids(prepare_vectors(vectors, metric), np.arange(first_id, first_id + len(vectors), dtype=np.int64))
    faiss.write_index(index, str(out))


def build_sharded(folder: str | Path, out: str | Path, *, kind: str = "auto", metric: str = "cosine",
                  max_memory: int = 4 << 30, seed: int = 0, threads: int = 2) -> dict[str, Any]:
    """Build ``OUT/merged.index`` (+ ``merged.ivfdata`` and a sidecar) from a complete shards folder."""
    import faiss
    import numpy as np
    from faiss.contrib.ondisk import merge_ondisk

    folder, out = Path(folder), Path(out)
    plan = read_plan(folder)
    markers = check_complete(folder, plan)
    counts = [marker["vectors"] for marker in markers]
    rows, dim = sum(counts), markers[0]["dim"]
    spec = choose_spec(rows, dim, kind, metric, max_memory)
    if spec.kind == "flat" or spec.kind == "hnsw":  # auto on a small dataset: IVF still, the recipe needs lists
        spec = choose_spec(rows, dim, "ivf" if kind in ("auto", "ivf") else kind, metric)
    if spec.kind not in ("ivf", "ivfpq"):
        raise IndexOptionError(f"a sharded build makes IVF indexes (ivf or ivfpq), not {kind!r}; for flat or hnsw "
                               "merge the shards into the store (`hubtune merge`) and run `hubtune index build`")
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    names = [shard.name for shard in plan.shards]
    chosen = training_rows(rows, spec.nlist, seed)
    sample = _gather(folder, names, starts, np.arange(rows) if chosen is None else chosen, dim)
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    trained = parts / "trained.index"
    faiss.write_index(to_cpu(empty_index(dim, spec, prepare_vectors(sample, metric), seed)), str(trained))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda i: add_shard(trained, _vectors(folder, names[i]), int(starts[i]), metric,
                                          parts / f"{names[i]}.index"), range(len(names))))
    merged = faiss.read_index(str(trained))
    merge_ondisk(merged, [str(parts / f"{name}.index") for name in names],
                                      str(out / "merged.ivfdata"))
    faiss.extract_index_ivf(merged).nprobe = spec.nprobe
    sidecar = save(merged, out / MERGED, spec, identity(folder))
    shutil.rmtree(parts)
    return {"kind": spec.kind, "rows": int(merged.ntotal), "path": str(out / MERGED), "shards": len(names),
            "nlist": spec.nlist, "sha256": sidecar["sha256"]}


def load_sharded(out: str | Path, folder: str | Path) -> tuple[Any, IndexSpec] | None:
    """The merged index in ``out`` if its sidecar matches the shards folder; else None (rebuild it)."""
    from hubtune.index.faiss_index import load

    return load(Path(out) / MERGED, identity(folder))
