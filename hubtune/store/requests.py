"""The request memo: a fingerprint known without loading the model.

``extract`` records which fingerprint a request (the reference and options as the user gave them,
plus the hardware that decides ``auto`` precision) resolved to, so a rerun of the same request over
a fully cached dataset finishes without loading the model; lookups use the same record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hubtune.backbone import LoadOptions


def request_record(ref: str, options: LoadOptions, stored_dtype: str) -> dict[str, Any]:
    """Everything that decides the fingerprint, as the user gave it, plus the hardware that
    decides ``auto`` precision; a weights file is identified by size and mtime."""
    from hubtune.constants import auto_precision
    from hubtune.runtime import cpu_has_fast_bf16

    weights: Any = options.weights
    path = Path(options.weights).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        stat = path.stat()
        weights = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {
        "ref": ref,
        "layer": options.layer,
        "pool": options.pool,
        "precision": options.precision,
        "device": options.device,
        "weights": weights,
        "trust_remote_code": options.trust_remote_code,
        **{name: getattr(options, name) for name in ("prompt", "prompt_text", "dim", "tower")
           if getattr(options, name) is not None},  # absent when unset: earlier memos stay valid
        "stored_dtype": stored_dtype,
        "hardware": {
            "cuda": os.path.exists("/dev/nvidiactl"),
            "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cpu_bf16": cpu_has_fast_bf16(),
            "auto_precision": auto_precision(),  # HUBTUNE_AUTO_PRECISION: what auto is forced to, if anything
        },
    }


def request_key(request: dict[str, Any]) -> bytes:
    """The store's key for a request record: blake2b-128 of its canonical JSON."""
    import hashlib

    from hubtune.fingerprint import canonical_json

    return hashlib.blake2b(canonical_json(request).encode(), digest_size=16).digest()
