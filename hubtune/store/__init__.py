"""The embedding store: vectors by (fingerprint, content key), dataset manifests, per-item errors.

Modules, each on the ones before it: ``blocks`` (how vectors and keys are encoded), ``requests``
(the request memo), ``manifests`` (dataset names and manifests), ``maintenance`` (verify, prune),
``lmdb_store`` (:class:`EmbeddingStore`, the LMDB environment that joins them); then, reading
vectors back, ``lookup`` (which fingerprint a command means) and ``vectors`` (a dataset's vectors
in order, export). This package imports no numpy, lmdb or torch until a store is used.
"""

from hubtune.errors import DatasetNameError, StoreError
from hubtune.store.blocks import FP_BYTES, KEY_BYTES, decode_block, encode_block
from hubtune.store.lmdb_store import DEFAULT_MAP_SIZE, EmbeddingStore, release_inherited
from hubtune.store.maintenance import VerifyReport
from hubtune.store.manifests import MAX_NAME_BYTES, check_dataset_name, manifest_keys

__all__ = [
    "DEFAULT_MAP_SIZE",
    "FP_BYTES",
    "KEY_BYTES",
    "MAX_NAME_BYTES",
    "DatasetNameError",
    "EmbeddingStore",
    "StoreError",
    "VerifyReport",
    "check_dataset_name",
    "decode_block",
    "encode_block",
    "manifest_keys",
    "release_inherited",
]
