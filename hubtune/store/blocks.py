"""Block encoding: how vectors and keys are laid out in the store's LMDB values.

A block is one committed batch: a header (magic, dtype, dim, rows), the CRC32 of the vector bytes,
then the C-ordered vectors. The key index maps fingerprint + content key to ``(block, row)``.
"""

from __future__ import annotations

import struct
import zlib
from typing import TYPE_CHECKING

from hubtune.errors import StoreError

if TYPE_CHECKING:
    import numpy as np

FP_BYTES = 16
KEY_BYTES = 16
_HEADER = struct.Struct("<4sBxHII")  # magic, dtype code, pad, reserved, dim, rows
_CRC = struct.Struct("<I")
LOCATION = struct.Struct(">QI")  # block number, row
BLOCK_NUMBER = struct.Struct(">Q")
PAST_KEYS = b"\xff" * (KEY_BYTES + 1)  # after fingerprint: sorts past every key of that fingerprint
_MAGIC = b"HTB1"
_DTYPES = {1: "float16", 2: "float32"}
_DTYPE_CODES = {name: code for code, name in _DTYPES.items()}


def fingerprint_bytes(fingerprint: str) -> bytes:
    """A fingerprint's hex as the 16 bytes every key of it starts with."""
    try:
        raw = bytes.fromhex(fingerprint)
    except ValueError:
        raw = b""
    if len(raw) != FP_BYTES:
        raise StoreError(f"fingerprint {fingerprint!r} is not {FP_BYTES} bytes of hex; "
                         "copy one from `hubtune cache ls --json`")
    return raw


def encode_block(vectors: "np.ndarray") -> bytes:
    """``(rows, dim)`` float16/float32 array -> header + CRC + C-ordered bytes."""
    import numpy as np

    dtype = str(vectors.dtype)
    if dtype not in _DTYPE_CODES or vectors.ndim != 2:
        raise StoreError(f"blocks hold 2-d float16/float32 arrays, got {dtype} with shape {vectors.shape}")
    payload = np.ascontiguousarray(vectors).tobytes()
    header = _HEADER.pack(_MAGIC, _DTYPE_CODES[dtype], 0, vectors.shape[1], vectors.shape[0])
    return header + _CRC.pack(zlib.crc32(payload)) + payload


def decode_block(value: bytes | memoryview, check: bool = True) -> "np.ndarray":
    """Inverse of :func:`encode_block`; raises :class:`StoreError` on a bad header or CRC."""
    import numpy as np

    value = memoryview(value)
    if len(value) < _HEADER.size + _CRC.size:
        raise StoreError("block shorter than its header")
    magic, code, _, dim, rows = _HEADER.unpack_from(value)
    if magic != _MAGIC or code not in _DTYPES:
        raise StoreError("block header is not a hubtune block")
    payload = value[_HEADER.size + _CRC.size:]
    dtype = np.dtype(_DTYPES[code])
    if len(payload) != rows * dim * dtype.itemsize:
        raise StoreError(f"block holds {len(payload)} bytes, header says {rows} x {dim} {dtype}")
    if check and zlib.crc32(payload) != _CRC.unpack_from(value, _HEADER.size)[0]:
        raise StoreError("block CRC32 mismatch: the vector bytes are damaged")
    return np.frombuffer(payload, dtype=dtype).reshape(rows, dim)


def split_fingerprints(value: bytes) -> list[bytes]:
    return [bytes(value[i : i + FP_BYTES]) for i in range(0, len(value), FP_BYTES)]
