"""The fingerprint: a hash of everything that decides which function produced a vector.

A cached vector is only valid for the exact function that made it. The fingerprint is the blake2b
(16 bytes) of the canonical JSON of the fields in :data:`FIELDS`; change any one of them and it
changes. It is a pure function of plain data, so it is stable across processes and machines.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

#: Bumped whenever the stored layout of a vector changes, so old caches are never misread.
STORE_FORMAT_VERSION = 2

FIELDS = (
    "source",  # plugin source name: hf, timm, torchvision, ...
    "model",  # model id within the source
    "revision",  # what the source resolved the reference to: commit sha, weights enum name (None: nothing to resolve)
    "weights",  # --weights identity: default, random:SEED or file-sha256:HEX
    "layer",  # canonical layer name
    "pool",  # canonical pooling name
    "preprocess",  # the full preprocessing config (size, crop, mean/std, tokenizer max length, ...)
    "precision",  # resolved compute precision: fp32, bf16 or fp16
    "stored_dtype",  # float16 or float32
    "format",  # STORE_FORMAT_VERSION
)
#: fields present only where they apply (absent, they leave every other fingerprint as it was)
OPTIONAL_FIELDS = (
    "tower",  # a two-tower model's tower: image or text
    "prompt",  # the prompt text put before every input
    "dim",  # --dim N: the first N dimensions kept (Matryoshka)
)


def hash_file(path: "str | os.PathLike[str]", digest: "hashlib._Hash") -> "hashlib._Hash":
    """Feed a file into ``digest`` in 1 MiB chunks (constant memory) and return the digest."""
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no whitespace, ASCII only; tuples become lists."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def compute_fingerprint(fields: Mapping[str, Any]) -> str:
    """32 hex characters (16 bytes) identifying the embedding function described by ``fields``."""
    missing = [name for name in FIELDS if name not in fields]
    extra = [name for name in fields if name not in FIELDS + OPTIONAL_FIELDS]
    if missing or extra:
        raise ValueError(f"fingerprint fields: missing {missing}, unexpected {extra}; expected {list(FIELDS)} "
                         f"and optionally {list(OPTIONAL_FIELDS)}")
    return hashlib.blake2b(canonical_json(dict(fields)).encode("ascii"), digest_size=16).hexdigest()
