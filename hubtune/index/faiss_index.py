"""FAISS indexes over a dataset's cached vectors.

Kinds: ``flat`` (exact), ``hnsw`` (graph), ``ivf`` (IVF-Flat), ``ivfpq`` (IVF-PQ, compressed) and
``auto``, which picks by row count and a memory budget the way autofaiss does: exact search while it
is cheap, HNSW while the vectors plus graph fit, IVF above that, IVF-PQ when even that does not fit.
Cosine similarity is inner product on L2-normalised vectors; L2 on request. Index ids are the rows
of the dataset's vectors in dataset order (``hubtune export`` order).

An index file is written atomically (temporary file, fsync, rename) with a JSON sidecar recording
the fingerprint, dataset, row count, metric, search settings and the file's sha256. A load checks
all of them: a stale, foreign or damaged index is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.atomic import atomic_write, staged
from hubtune.errors import IndexOptionError
from hubtune.fingerprint import hash_file

if TYPE_CHECKING:
    import numpy as np

KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq")
METRICS = ("cosine", "l2")
HNSW_M = 32
FLAT_MAX_ROWS = 20_000  # below this, exact search is fast enough and needs no training
DEFAULT_EF_SEARCH = 128
DEFAULT_NPROBE_FRACTION = 1 / 16  # of the lists; at least 16
PQ_MIN_ROWS = 256  # one training point per code of an 8-bit sub-quantizer, as faiss requires
INDEX_FOLDER = "indexes"  # a dataset's index files live in <cache>/indexes/


@dataclass
class IndexSpec:
    """What to build and how to search it; stored in the sidecar."""

    kind: str
    metric: str = "cosine"
    nlist: int = 0  # ivf / ivfpq
    pq_m: int = 0  # ivfpq: sub-quantizers
    nprobe: int = 0  # ivf / ivfpq search setting
    ef_search: int = 0  # hnsw search setting
    params: dict[str, Any] = field(default_factory=dict)


def _bytes_per_vector(kind: str, dim: int, pq_m: int = 0) -> float:
    if kind == "flat" or kind == "ivf":
        return dim * 4 + (8 if kind == "ivf" else 0)
    if kind == "hnsw":
        return dim * 4 + HNSW_M * 2 * 4
    return pq_m + 8  # ivfpq: codes + id


def choose_spec(rows: int, dim: int, kind: str = "auto", metric: str = "cosine",
                max_memory: int = 4 << 30) -> IndexSpec:
    """Fill in an :class:`IndexSpec`; ``auto`` picks the kind by rows and the memory budget."""
    if kind not in KINDS:
        raise IndexOptionError(f"unknown index kind {kind!r}; expected one of {', '.join(KINDS)}")
    if metric not in METRICS:
        raise IndexOptionError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    if kind == "auto":
        if rows <= FLAT_MAX_ROWS and rows * _bytes_per_vector("flat", dim) <= max_memory:
            kind = "flat"
        elif rows * _bytes_per_vector("hnsw", dim) <= max_memory and rows <= 5_000_000:
            kind = "hnsw"
        elif rows * _bytes_per_vector("ivf", dim) <= max_memory:
            kind = "ivf"
        else:
            kind = "ivfpq"
    spec = IndexSpec(kind=kind, metric=metric)
    if kind in ("ivf", "ivfpq"):
        spec.nlist = int(min(max(1, rows // 39), max(16, 4 * math.sqrt(rows))))  # faiss wants >= 39 points per list
        spec.nprobe = min(spec.nlist, max(16, int(spec.nlist * DEFAULT_NPROBE_FRACTION)))
    if kind == "ivfpq":
        if rows < PQ_MIN_ROWS:
            raise IndexOptionError(
                f"--kind ivfpq trains 256-entry codebooks and needs at least {PQ_MIN_ROWS} vectors; this dataset has "
                f"{rows}: use --kind auto (exact search at this size) or flat"
            )
        spec.pq_m = next(m for m in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1) if dim % m == 0 and m <= dim)
    if kind == "hnsw":
        spec.ef_search = DEFAULT_EF_SEARCH
    return spec


def prepare_vectors(vectors: "np.ndarray", metric: str) -> "np.ndarray":
    """A float32 copy, L2-normalised for cosine (inner product on unit vectors)."""
    import faiss
    import numpy as np

    data = np.ascontiguousarray(vectors, dtype=np.float32).copy()
    if metric == "cosine":
        faiss.normalize_L2(data)
    return data


def training_rows(rows: int, nlist: int, seed: int = 0) -> "np.ndarray | None":
    """Rows to train IVF centroids on: None (all of them) when few, else ``256 * nlist`` rows drawn
    with ``seed`` (faiss' own advice: ~39-256 points per centroid). A sharded build draws the same."""
    import numpy as np

    return np.random.default_rng(seed).choice(rows, 256 * nlist, replace=False) if rows > 256 * nlist else None


def empty_index(dim: int, spec: IndexSpec, sample: "np.ndarray | None" = None, seed: int = 0) -> Any:
    """An empty index of ``spec``; IVF kinds are trained on ``sample`` (vectors already prepared)."""
    import faiss

    metric = faiss.METRIC_INNER_PRODUCT if spec.metric == "cosine" else faiss.METRIC_L2
    if spec.kind == "flat":
        return faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)
    if spec.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, metric)
        index.hnsw.efConstruction = 80
        return index
    quantizer = faiss.IndexFlatIP(dim) if metric == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(dim)
    if spec.kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, spec.nlist, metric)
    else:
        index = faiss.IndexIVFPQ(quantizer, dim, spec.nlist, spec.pq_m, 8, metric)
    index.cp.seed = seed
    index = to_device(index)
    index.train(sample)
    return index


def build(vectors: "np.ndarray", spec: IndexSpec, seed: int = 0) -> Any:
    """A FAISS index over ``vectors`` (rows become ids 0..N-1)."""
    data = prepare_vectors(vectors, spec.metric)
    sample = None
    if spec.kind in ("ivf", "ivfpq"):
        chosen = training_rows(len(data), spec.nlist, seed)
        sample = data if chosen is None else data[chosen]
    index = empty_index(data.shape[1], spec, sample, seed)
    index = to_device(index) if spec.kind == "flat" else index
    index.add(data)
    apply_search_params(index, spec)
    return index


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


def to_device(index: Any) -> Any:
    """On a machine with CUDA and the faiss GPU build, move flat and IVF indexes to the GPUs
    (HNSW has no GPU version); elsewhere return the index unchanged."""
    import faiss

    if gpu_count() and not isinstance(index, faiss.IndexHNSW):
        return faiss.index_cpu_to_all_gpus(index)
    return index


def to_cpu(index: Any) -> Any:
    import faiss

    return faiss.index_gpu_to_cpu(index) if gpu_count() and "Gpu" in type(index).__name__ else index


def apply_search_params(index: Any, spec: IndexSpec) -> None:
    import faiss

    if spec.kind in ("ivf", "ivfpq"):
        if "Gpu" in type(index).__name__:
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", spec.nprobe)
        else:
            faiss.extract_index_ivf(index).nprobe = spec.nprobe
    elif spec.kind == "hnsw":
        index.hnsw.efSearch = spec.ef_search


def search(index: Any, queries: "np.ndarray", k: int, metric: str) -> tuple["np.ndarray", "np.ndarray"]:
    """``(scores, ids)``, each ``(Q, k')`` with ``k' = min(k, rows)``; padded ``-1`` ids mean "none".

    Scores are cosine similarities (higher is nearer) or squared L2 distances (lower is nearer).
    """
    k = max(1, min(k, index.ntotal))
    return index.search(prepare_vectors(queries, metric), k)


# -- files ----------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hash_file(path, hashlib.sha256()).hexdigest()


def save(index: Any, path: Path, spec: IndexSpec, identity: dict[str, Any]) -> dict[str, Any]:
    """Write the index and its sidecar so that a crash at any moment leaves a loadable pair.

    Two renames cannot be one atomic step, so the sidecar goes first and vouches for both files:
    the new index's sha256, and under ``previous`` the entry of the index still in place. Killed
    between the renames, :func:`load` finds the old index and its ``previous`` entry.
    """
    import faiss

    with staged(path) as temporary:
        faiss.write_index(to_cpu(index), temporary)
        sidecar = {**identity, "rows": int(index.ntotal), "spec": asdict(spec), "sha256": _sha256(Path(temporary))}
        in_place = _vouched_entry(path)
        if in_place is not None:
            sidecar["previous"] = in_place
        atomic_write(sidecar_path(path), lambda side: Path(side).write_text(json.dumps(sidecar, indent=2)))
    return sidecar


def sidecar_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".json")


def _vouched_entry(path: Path) -> dict[str, Any] | None:
    """The sidecar entry (current or ``previous``) whose sha256 is that of the file at ``path``."""
    side = sidecar_path(path)
    if not path.is_file() or not side.is_file():
        return None
    try:
        sidecar = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    digest = _sha256(path)
    for entry in (sidecar, sidecar.get("previous")):
        if isinstance(entry, dict) and entry.get("sha256") == digest:
            return {key: value for key, value in entry.items() if key != "previous"}
    return None


def remove_indexes(folder: Path, **identity: str) -> list[Path]:
    """Delete the index files under ``folder`` whose sidecar matches ``identity`` (e.g. ``dataset=``);
    return them. Matched by the sidecar, not by file name: a name pattern built from a dataset name
    could reach outside ``folder`` or catch another dataset whose name starts the same way."""
    removed = []
    for side in sorted(folder.rglob("*.faiss.json")) if folder.is_dir() else []:
        try:
            sidecar = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(sidecar, dict) and all(sidecar.get(key) == value for key, value in identity.items()):
            index_file = side.with_suffix("")
            for file in (index_file, side):
                file.unlink(missing_ok=True)
            removed.append(index_file)
            _remove_empty_folders(side.parent, folder)
    return removed


def _remove_empty_folders(folder: Path, root: Path) -> None:
    """Remove ``folder`` and its parents up to (not including) ``root`` while they are empty."""
    while folder != root and folder.is_relative_to(root) and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def load(path: Path, identity: dict[str, Any]) -> tuple[Any, IndexSpec] | None:
    """The index at ``path`` if its sidecar matches ``identity`` and its bytes; else None."""
    import faiss

    sidecar = _vouched_entry(path)
    if sidecar is None or any(sidecar.get(key) != value for key, value in identity.items()):
        return None
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)  # on-disk lists: beside the file
    except RuntimeError:
        return None
    if index.ntotal != sidecar.get("rows"):
        return None
    spec = IndexSpec(**sidecar["spec"])
    index = to_device(index)
    apply_search_params(index, spec)
    return index, spec
