"""The embedding store (see :mod:`hubtune.store.lmdb_store`) and reading vectors back
(:mod:`hubtune.store.vectors`)."""

from hubtune.store.lmdb_store import (
    DatasetNameError,
    EmbeddingStore,
    StoreError,
    VerifyReport,
    check_dataset_name,
    decode_block,
    encode_block,
    manifest_keys,
    release_inherited,
)

__all__ = [
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
