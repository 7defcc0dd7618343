"""FAISS indexes over a dataset's vectors, and search.

``faiss_index`` builds, saves (with a sidecar that vouches for it) and loads one index, and is
this package's API (re-exported here: ``from hubtune import index as ix; ix.build(...)``);
``neighbours`` keeps a dataset's index beside the store and searches it; ``sharded`` builds an IVF
index straight from a shards folder (faiss' on-disk recipe). faiss is imported only when used.
"""

from hubtune.errors import IndexOptionError
from hubtune.index.faiss_index import (
    DEFAULT_EF_SEARCH,
    DEFAULT_NPROBE_FRACTION,
    FLAT_MAX_ROWS,
    HNSW_M,
    INDEX_FOLDER,
    KINDS,
    METRICS,
    PQ_MIN_ROWS,
    IndexSpec,
    apply_search_params,
    build,
    choose_spec,
    empty_index,
    gpu_count,
    load,
    prepare_vectors,
    remove_indexes,
    save,
    search,
    sidecar_path,
    to_cpu,
    to_device,
    training_rows,
)

__all__ = [
    "DEFAULT_EF_SEARCH",
    "DEFAULT_NPROBE_FRACTION",
    "FLAT_MAX_ROWS",
    "HNSW_M",
    "INDEX_FOLDER",
    "KINDS",
    "METRICS",
    "PQ_MIN_ROWS",
    "IndexOptionError",
    "IndexSpec",
    "apply_search_params",
    "build",
    "choose_spec",
    "empty_index",
    "gpu_count",
    "load",
    "prepare_vectors",
    "remove_indexes",
    "save",
    "search",
    "sidecar_path",
    "to_cpu",
    "to_device",
    "training_rows",
]
