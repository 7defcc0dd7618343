"""The embedding store: one LMDB environment per cache folder.

Layout (see DESIGN.md, "Storage facts"): vectors are written in *blocks*, one LMDB value per
committed batch, so the file holds little more than the raw vector bytes and whole datasets read
back with one vectorised gather per block. A separate key index maps each content key to its
``(block, row)``, which keeps dedupe-by-key and resume cheap.

Named databases:

==============  =====================================================  ===============================
database        key                                                    value
==============  =====================================================  ===============================
``fingerprints`` fingerprint (16 bytes)                                 JSON: fields, dim, dtype
``blocks``      fingerprint + block number (8 bytes, big-endian)        header + vector bytes
``keys``        fingerprint + content key (16 bytes)                    block number + row (12 bytes)
``errors``      fingerprint + content key                               JSON: reason, origin
``manifests``   dataset name (UTF-8)                                    zlib'd JSON: keys, labels, ...
``extracted``   dataset name (UTF-8)                                    fingerprints (16 bytes each)
``requests``    hash of an extract request (reference + options)       fingerprint it resolved to
==============  =====================================================  ===============================

``requests`` lets a rerun of the same ``extract`` know its fingerprint without loading the model,
so a fully cached dataset finishes in well under a second.

``extracted`` says under which fingerprints a dataset was extracted: those that held every one of
its items (a vector or an error) when its manifest was recorded. Extract records the manifest last,
so its own fingerprint is always among them, and a fingerprint that merely shares some files with the
dataset (from another dataset) never is. ``verify`` judges a manifest only under those. Stores written
before this database existed have no entry: their manifests are judged as they were then, under
every fingerprint holding any of their items, until an extract records them again.

A block header carries the dtype, dim, row count and the CRC32 of the vector bytes, so ``verify``
detects any damaged byte. One write transaction per batch, ``sync`` on, no ``writemap``: a crash
loses at most the batch in flight and never leaves a half-written block visible. Only one process
writes at a time (LMDB's writer lock serialises them); any number read. Handles must not cross
``fork``: each process opens its own (the handle checks).
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import struct
import weakref
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from hubtune.errors import HubtuneError

if TYPE_CHECKING:
    import numpy as np

FP_BYTES = 16
KEY_BYTES = 16
DEFAULT_MAP_SIZE = 1 << 40  # a virtual reservation, not disk use
_HEADER = struct.Struct("<4sBxHII")  # magic, dtype code, pad, reserved, dim, rows
_CRC = struct.Struct("<I")
_LOCATION = struct.Struct(">QI")  # block number, row
_BLOCK_NUMBER = struct.Struct(">Q")
_PAST_KEYS = b"\xff" * (KEY_BYTES + 1)  # after fingerprint: sorts past every key of that fingerprint
_LOST = ", which held all of them when the dataset was recorded (entries lost: run its extract again)"
_UNRECORDED = (" (an interrupted extract, or a dataset recorded by an older hubtune that shares files with one "
               "extracted with that fingerprint: run this dataset's extract again, which records what it was "
               "extracted with)")
_SCAN_PAGE = 65536  # key-index entries read per page when scanning a fingerprint's run
_MAGIC = b"HTB1"
_DTYPES = {1: "float16", 2: "float32"}
_DTYPE_CODES = {name: code for code, name in _DTYPES.items()}
_HANDLES: "weakref.WeakSet[EmbeddingStore]" = weakref.WeakSet()  # open handles, to release after fork


class StoreError(HubtuneError):
    """The store is damaged, misused, or cannot be written."""


class DatasetNameError(StoreError, ValueError):
    """A dataset name that cannot be a key of the store and part of an index file name."""

    exit_code = 2


MAX_NAME_BYTES = 200  # an index file name adds ~45 bytes; file systems allow 255


def _name_problem(name: str) -> str | None:
    if not name.strip():
        return "is empty or blank"
    if "/" in name or "\\" in name:
        return "contains a path separator"
    if name.startswith("."):
        return "starts with a dot"
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in name):
        return "contains a control character"
    if len(name.encode()) > MAX_NAME_BYTES:
        return f"is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_dataset_name(name: str) -> str:
    """``name`` if it can name a dataset, else a :class:`DatasetNameError` saying why and what to pass.

    A dataset name becomes part of index file names under the cache folder, so a separator, a
    leading dot (``..``) or a control character would put files outside it or hide them.
    """
    problem = _name_problem(name)
    if problem is not None:
        raise DatasetNameError(
            f"dataset name {name!r} {problem}; a dataset name is 1 to {MAX_NAME_BYTES} bytes without '/', '\\', "
            "control characters or a leading '.', e.g. 'train-images'; pass one with --dataset NAME (one an older "
            "hubtune recorded can still be dropped with `hubtune cache prune --dataset`)"
        )
    return name


@dataclass
class VerifyReport:
    """What ``cache verify`` found; ``ok`` is False on any damage."""

    blocks: int = 0
    vectors: int = 0
    manifests: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _fp(fingerprint: str) -> bytes:
    try:
        raw = bytes.fromhex(fingerprint)
    except ValueError:
        raw = b""
    if len(raw) != FP_BYTES:
        raise StoreError(f"fingerprint {fingerprint!r} is not {FP_BYTES} bytes of hex; "
                         "copy one from `hubtune cache ls --json`")
    return raw


def _request_key(request: dict[str, Any]) -> bytes:
    import hashlib

    from hubtune.fingerprint import canonical_json

    return hashlib.blake2b(canonical_json(request).encode(), digest_size=16).digest()


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


def release_inherited() -> None:
    """In a forked child, close the store handles inherited from the parent.

    They are unusable here (``_guard``), and while they are open py-lmdb refuses to open the same
    files again in this process. Closing them in the child touches neither the parent's reader
    slots nor its locks (both belong to the parent's pid).
    """
    for handle in list(_HANDLES):
        if handle._pid != os.getpid():
            _HANDLES.discard(handle)
            handle.env.close()


class EmbeddingStore:
    """Vectors by ``(fingerprint, content key)``, dataset manifests and per-item errors."""

    def __init__(self, path: str | Path, *, readonly: bool = False, map_size: int = DEFAULT_MAP_SIZE,
                 max_readers: int = 512):
        import lmdb

        self.path = Path(path)
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not (self.path / "data.mdb").is_file():
            raise StoreError(f"no embedding store at {self.path} (run `hubtune extract` first)")
        self._pid = os.getpid()
        release_inherited()
        self.env = lmdb.open(
            str(self.path), map_size=map_size, max_dbs=8, readonly=readonly, sync=True,
            writemap=False, metasync=True, lock=True, max_readers=max_readers,
        )
        self.env.reader_check()  # clear reader slots left by killed processes
        _HANDLES.add(self)
        create = not readonly
        self._fingerprints = self.env.open_db(b"fingerprints", create=create)
        self._blocks = self.env.open_db(b"blocks", create=create)
        self._keys = self.env.open_db(b"keys", create=create)
        self._errors = self.env.open_db(b"errors", create=create)
        self._manifests = self.env.open_db(b"manifests", create=create)
        self._requests = self.env.open_db(b"requests", create=create)
        self._extracted = self._optional_db(b"extracted", create)

    def _optional_db(self, name: bytes, create: bool) -> Any:
        """A database added after stores were first written: None in an older store opened read-only."""
        import lmdb

        try:
            return self.env.open_db(name, create=create)
        except lmdb.NotFoundError:
            return None

    # -- lifecycle -------------------------------------------------------------------------------
    def _guard(self) -> None:
        if os.getpid() != self._pid:
            raise StoreError(
                "this EmbeddingStore handle was opened in another process and inherited across fork; "
                "open the store again in each process (LMDB handles must not cross fork)"
            )

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """One write transaction; LMDB's map-full and I/O errors become a :class:`StoreError` that
        says what to do (what earlier transactions committed is kept)."""
        import lmdb

        try:
            with self.env.begin(write=True) as txn:
                yield txn
        except lmdb.MapFullError as exc:
            raise StoreError(
                f"the store at {self.path} is full: it reached its map size of {self.env.info()['map_size']:,} "
                "bytes; open it with a larger map_size and run the same command again (committed work is kept)"
            ) from exc
        except lmdb.Error as exc:
            raise StoreError(
                f"could not write to the store at {self.path}: {exc}; free disk space (or fix the error) and "
                "run the same command again: batches committed before are kept"
            ) from exc

    def close(self) -> None:
        if os.getpid() == self._pid:
            _HANDLES.discard(self)
            self.env.close()

    def __enter__(self) -> "EmbeddingStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- fingerprints ----------------------------------------------------------------------------
    def register(self, fingerprint: str, fields: dict[str, Any], dim: int, dtype: str,
                 shape: dict[str, Any] | None = None) -> None:
        """Record what a fingerprint means (idempotent; the first record wins).

        ``shape`` describes rows that are flattened tensors (split-point activations), e.g.
        ``{"hidden": [C, H, W]}`` or ``{"hidden": [L, D], "mask": L}``.
        """
        self._guard()
        record = {"fields": fields, "dim": dim, "dtype": dtype, **({"shape": shape} if shape else {})}
        value = json.dumps(record, sort_keys=True).encode()
        with self._write() as txn:
            txn.put(_fp(fingerprint), value, db=self._fingerprints, overwrite=False)

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        self._guard()
        with self.env.begin() as txn:
            return {key.hex(): json.loads(value) for key, value in txn.cursor(db=self._fingerprints)}

    def remember_request(self, request: dict[str, Any], fingerprint: str) -> None:
        """Record which fingerprint an extract request resolved to."""
        self._guard()
        with self._write() as txn:
            txn.put(_request_key(request), _fp(fingerprint), db=self._requests)

    def recall_request(self, request: dict[str, Any]) -> str | None:
        self._guard()
        with self.env.begin() as txn:
            value = txn.get(_request_key(request), db=self._requests)
        return None if value is None else bytes(value).hex()

    # -- vectors ---------------------------------------------------------------------------------
    def _next_block(self, txn: Any, fp: bytes) -> int:
        cursor = txn.cursor(db=self._blocks)
        if cursor.set_range(fp + b"\xff" * 8):
            found = cursor.prev()
        else:
            found = cursor.last()
        if found and cursor.key()[:FP_BYTES] == fp:
            return _BLOCK_NUMBER.unpack(cursor.key()[FP_BYTES:])[0] + 1
        return 0

    def put_batch(
        self,
        fingerprint: str,
        keys: Sequence[bytes],
        vectors: "np.ndarray",
        errors: dict[bytes, dict[str, Any]] | None = None,
    ) -> int:
        """Store one batch in one durable transaction; keys already stored are left as they are.

        Returns the number of vectors written. ``errors`` maps content keys to a JSON-able record
        (at least ``reason``) for items that could not be embedded.
        """
        self._guard()
        fp = _fp(fingerprint)
        if len(keys) != len(vectors):
            raise StoreError(f"{len(keys)} keys for {len(vectors)} vectors")
        with self._write() as txn:
            first = {key: i for i, key in reversed(list(enumerate(keys)))}  # a key twice in a batch: once
            fresh = [i for i, key in enumerate(keys) if first[key] == i and txn.get(fp + key, db=self._keys) is None]
            written = 0
            if fresh:
                block = self._next_block(txn, fp)
                txn.put(fp + _BLOCK_NUMBER.pack(block), encode_block(vectors[fresh]), db=self._blocks)
                for row, index in enumerate(fresh):
                    txn.put(fp + keys[index], _LOCATION.pack(block, row), db=self._keys)
                    txn.delete(fp + keys[index], db=self._errors)
                written = len(fresh)
            for key, record in (errors or {}).items():
                if txn.get(fp + key, db=self._keys) is None:
                    txn.put(fp + key, json.dumps(record, sort_keys=True).encode(), db=self._errors)
        return written

    def has(self, fingerprint: str, keys: Iterable[bytes]) -> list[bool]:
        """Which keys already have a vector under this fingerprint."""
        self._guard()
        fp = _fp(fingerprint)
        with self.env.begin() as txn:
            return [txn.get(fp + key, db=self._keys) is not None for key in keys]

    def locate(self, fingerprint: str, keys: Sequence[bytes]) -> "np.ndarray":
        """``(N, 2)`` int64 ``(block, row)`` of each key; ``-1`` rows for keys with no vector.

        Few keys: one point lookup each. Many keys (a whole dataset): one sequential scan of the
        fingerprint's key index and a vectorised sorted search, several times faster.
        """
        import numpy as np

        self._guard()
        fp = _fp(fingerprint)
        locations = np.full((len(keys), 2), -1, dtype=np.int64)
        with self.env.begin(buffers=False) as txn:
            if len(keys) and len(keys) * 4 >= txn.stat(self._keys)["entries"]:
                return self._locate_by_scan(txn, fp, keys, locations)
            lookup = txn.get
            for i, key in enumerate(keys):
                value = lookup(fp + key, db=self._keys)
                if value is not None:
                    locations[i] = _LOCATION.unpack(value)
        return locations

    def _locate_by_scan(self, txn: Any, fp: bytes, keys: Sequence[bytes], locations: "np.ndarray") -> "np.ndarray":
        import numpy as np

        cursor = txn.cursor(db=self._keys)
        if not cursor.set_range(fp):
            return locations
        # keys sort by fingerprint first: the run for this fingerprint is contiguous, and its end is
        # found by bisecting pages of it (no Python call per key)
        past_run = (fp + _PAST_KEYS,)
        items = cursor.iternext()
        run: list[tuple[bytes, bytes]] = []
        while True:
            page = list(itertools.islice(items, _SCAN_PAGE))
            cut = bisect.bisect_left(page, past_run)
            run.extend(page[:cut])
            if cut < len(page) or len(page) < _SCAN_PAGE:
                break
        if not run:
            return locations
        found_keys, found_values = zip(*run)
        width = FP_BYTES + KEY_BYTES
        # LMDB iterates in byte order, which is the order of numpy's fixed-width bytes dtype
        suffixes = np.frombuffer(b"".join(found_keys), np.uint8).reshape(-1, width)[:, FP_BYTES:]
        stored = suffixes.copy().view(f"S{KEY_BYTES}").ravel()
        wanted = np.frombuffer(b"".join(keys), dtype=f"S{KEY_BYTES}")
        where = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
        hit = stored[where] == wanted
        values = np.frombuffer(b"".join(found_values), dtype=[("block", ">u8"), ("row", ">u4")])
        locations[hit, 0] = values["block"][where[hit]]
        locations[hit, 1] = values["row"][where[hit]]
        return locations

    def gather(self, fingerprint: str, locations: "np.ndarray", dtype: str = "float32",
               out: "np.ndarray | None" = None) -> "np.ndarray":
        """Vectors at ``locations`` (from :meth:`locate`, none missing): one vectorised copy per block."""
        import numpy as np

        if out is None:
            out = np.empty((len(locations), self._row_width(fingerprint, locations)), dtype=dtype)
        for _ in self.gather_chunks(fingerprint, locations, [out]):
            pass
        return out

    def _row_width(self, fingerprint: str, locations: "np.ndarray") -> int:
        """Values per row: from the first block's header (vectors may be stored unregistered)."""
        if len(locations) and locations[0, 0] >= 0:
            with self.env.begin(buffers=True) as txn:
                value = txn.get(_fp(fingerprint) + _BLOCK_NUMBER.pack(int(locations[0, 0])), db=self._blocks)
                if value is not None:
                    return int(decode_block(value, check=False).shape[1])
        meta = self.fingerprints().get(fingerprint)
        return int(meta["dim"]) if meta else 0

    def gather_chunks(self, fingerprint: str, locations: "np.ndarray",
                      buffers: Sequence["np.ndarray"]) -> Iterator["np.ndarray"]:
        """:meth:`gather` in consecutive pieces, piece ``i`` written into ``buffers[i % len(buffers)]``.

        Lets a caller stream a dataset larger than memory (export writes one piece while the next
        fills). Yields a view of the filled rows; it stays valid until that buffer comes round again.
        One read transaction for all pieces, and each block's CRC is checked once however many
        pieces it feeds.
        """
        import numpy as np

        self._guard()
        fp = _fp(fingerprint)
        if (locations < 0).any():
            raise KeyError(f"{int((locations[:, 0] < 0).sum())} keys have no vector under fingerprint {fingerprint}")
        if not len(locations):
            return
        step = min(len(buffer) for buffer in buffers)
        if step == 0:
            raise ValueError("gather_chunks needs buffers of at least one row")
        checked: set[int] = set()
        with self.env.begin(buffers=True) as txn:
            for index, start in enumerate(range(0, len(locations), step)):
                piece = locations[start : start + step]
                out = buffers[index % len(buffers)][: len(piece)]
                order = np.argsort(piece[:, 0], kind="stable")
                bounds = np.flatnonzero(np.diff(piece[order, 0])) + 1
                for group in np.split(order, bounds):
                    block = int(piece[group[0], 0])
                    value = txn.get(fp + _BLOCK_NUMBER.pack(block), db=self._blocks)
                    data = decode_block(value, check=block not in checked)
                    checked.add(block)
                    rows = piece[group, 1]
                    first, last = int(group[0]), int(group[-1])
                    if last - first == len(group) - 1 and rows[-1] - rows[0] == len(rows) - 1 and (np.diff(rows) == 1).all():
                        out[first : last + 1] = data[rows[0] : rows[-1] + 1]  # contiguous: a straight copy
                    else:
                        out[group] = data[rows]  # vectorised gather
                yield out

    def get(self, fingerprint: str, keys: Sequence[bytes], dtype: str = "float32") -> "np.ndarray":
        """Vectors for ``keys`` in the given order; a missing key raises :class:`KeyError`."""
        return self.gather(fingerprint, self.locate(fingerprint, keys), dtype)

    def errors(self, fingerprint: str) -> dict[bytes, dict[str, Any]]:
        self._guard()
        fp = _fp(fingerprint)
        with self.env.begin() as txn:
            cursor = txn.cursor(db=self._errors)
            found = {}
            if cursor.set_range(fp):
                for key, value in cursor:
                    if key[:FP_BYTES] != fp:
                        break
                    found[bytes(key[FP_BYTES:])] = json.loads(value)
            return found

    def count(self, fingerprint: str) -> int:
        return sum(1 for _ in self._iter_prefix(self._keys, _fp(fingerprint)))

    def _iter_prefix(self, db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        self._guard()
        with self.env.begin() as txn:
            cursor = txn.cursor(db=db)
            if not cursor.set_range(prefix):
                return
            for key, value in cursor:
                if not key.startswith(prefix):
                    return
                yield key, value

    # -- manifests -------------------------------------------------------------------------------
    def put_manifest(self, name: str, manifest: dict[str, list]) -> None:
        """Record a dataset: parallel lists ``keys`` (hex), ``labels``, ``splits``, ``origins``.

        Record it once its vectors are stored, as extract does: the fingerprints that hold every
        item at this moment are recorded with it as the ones it was extracted with.
        """
        self._guard()
        check_dataset_name(name)
        lengths = {column: len(values) for column, values in manifest.items()}
        if len(set(lengths.values())) > 1:
            raise StoreError(f"manifest columns differ in length: {lengths}")
        value = zlib.compress(json.dumps(manifest, separators=(",", ":")).encode(), 3)
        with self.env.begin() as txn:  # a rerun records the same manifest: its fingerprints need no new check
            same = txn.get(name.encode(), db=self._manifests) == value
            known = set(_split_fingerprints(self._recorded(txn, name) or b"")) if same else set()
        extracted = b"".join(sorted(known | self._complete_fingerprints(manifest_keys(manifest), known)))
        with self._write() as txn:
            for db, new in ((self._manifests, value), (self._extracted, extracted)):
                if txn.get(name.encode(), db=db) != new:  # a rerun changes no byte
                    txn.put(name.encode(), new, db=db)

    def manifest(self, name: str) -> dict[str, list]:
        self._guard()
        check_dataset_name(name)
        with self.env.begin() as txn:
            value = txn.get(name.encode(), db=self._manifests)
            if value is None:
                raise self._no_dataset(txn, name)
        return json.loads(zlib.decompress(value))

    def manifests(self) -> Iterator[tuple[str, dict[str, list]]]:
        """Every dataset with its manifest, by the name it was recorded under (also a name recorded
        before names were checked, so such a dataset can still be listed and pruned)."""
        self._guard()
        with self.env.begin() as txn:
            for key, value in txn.cursor(db=self._manifests):
                yield key.decode(), json.loads(zlib.decompress(value))

    def datasets(self) -> list[str]:
        self._guard()
        with self.env.begin() as txn:
            return self._dataset_names(txn)

    def _dataset_names(self, txn: Any) -> list[str]:
        return [key.decode() for key, _ in txn.cursor(db=self._manifests)]

    def _no_dataset(self, txn: Any, name: str) -> StoreError:
        names = ", ".join(repr(known) for known in self._dataset_names(txn)) or "none"
        return StoreError(f"no dataset called {name!r} in {self.path}; datasets: {names}")

    # -- which fingerprints hold a dataset ---------------------------------------------------------
    def _stored_fingerprints(self, txn: Any) -> set[bytes]:
        """Fingerprints with a vector or an error record (vectors may be stored unregistered): one
        cursor jump per fingerprint, not a scan of its keys."""
        found: set[bytes] = set()
        for db in (self._keys, self._errors):
            cursor = txn.cursor(db=db)
            more = cursor.first()
            while more:
                fp = bytes(cursor.key()[:FP_BYTES])
                found.add(fp)
                more = cursor.set_range(fp + _PAST_KEYS)
        return found

    def _absent(self, fp: bytes, keys: Sequence[bytes]) -> int:
        """How many of ``keys`` have neither a vector nor an error record under ``fp``."""
        import numpy as np

        without_vector = np.flatnonzero(self.locate(fp.hex(), keys)[:, 0] < 0)
        with self.env.begin() as txn:
            return sum(txn.get(fp + keys[i], db=self._errors) is None for i in without_vector)

    def _complete_fingerprints(self, keys: Sequence[bytes], skip: set[bytes]) -> set[bytes]:
        """Fingerprints (other than ``skip``) under which every key has a vector or an error record."""
        if not keys:
            return set()
        sample = keys[:: max(1, len(keys) // 64)]  # a cheap filter before the full check
        with self.env.begin() as txn:
            candidates = [fp for fp in self._stored_fingerprints(txn) - skip
                          if all(self._holds(txn, fp, key) for key in sample)]
        return {fp for fp in candidates if not self._absent(fp, keys)}

    def _holds(self, txn: Any, fp: bytes, key: bytes) -> bool:
        return txn.get(fp + key, db=self._keys) is not None or txn.get(fp + key, db=self._errors) is not None

    def recorded_fingerprints(self, name: str) -> list[str]:
        """The fingerprints dataset ``name`` was recorded as extracted with ([] for a manifest an
        older hubtune recorded, before the store kept them)."""
        self._guard()
        with self.env.begin() as txn:
            return [fp.hex() for fp in _split_fingerprints(self._recorded(txn, name) or b"")]

    def _recorded(self, txn: Any, name: str) -> bytes | None:
        """The ``extracted`` entry of dataset ``name`` (None: none, or an older store opened read-only)."""
        return None if self._extracted is None else txn.get(name.encode(), db=self._extracted)

    def _extracted_with(self, name: str, keys: Sequence[bytes]) -> tuple[list[bytes], bool]:
        """The fingerprints dataset ``name`` was extracted with, and whether the store recorded them.

        A manifest recorded before the store kept them: every fingerprint with a vector for any of
        its first 1000 items, as then (which also takes in fingerprints that only share files).
        """
        with self.env.begin() as txn:
            recorded = self._recorded(txn, name)
            if recorded is not None:
                return _split_fingerprints(recorded), True
            return [fp for fp in self._stored_fingerprints(txn)
                    if any(txn.get(fp + key, db=self._keys) is not None for key in keys[:1000])], False

    # -- maintenance -----------------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Check every block's CRC and every key's location, and that each manifest's items are all
        there under each fingerprint it was extracted with (not under one that merely shares files)."""
        self._guard()
        report = VerifyReport()
        self._verify_vectors(report)
        for name, manifest in self.manifests():
            report.manifests += 1
            keys = manifest_keys(manifest)
            fingerprints, recorded = self._extracted_with(name, keys)
            for fp in fingerprints:
                absent = self._absent(fp, keys)
                if absent:
                    report.problems.append(
                        f"dataset {name!r}: {absent} items have neither a vector nor an error under fingerprint "
                        f"{fp.hex()}{_LOST if recorded else _UNRECORDED}"
                    )
        return report

    def _verify_vectors(self, report: VerifyReport) -> None:
        block_rows: dict[bytes, int] = {}
        with self.env.begin(buffers=True) as txn:
            for key, value in txn.cursor(db=self._blocks):
                key = bytes(key)
                report.blocks += 1
                try:
                    block_rows[key] = decode_block(value).shape[0]
                except StoreError as exc:
                    report.problems.append(f"block {key[FP_BYTES:].hex()} of {key[:FP_BYTES].hex()}: {exc}")
            for key, value in txn.cursor(db=self._keys):
                report.vectors += 1
                block, row = _LOCATION.unpack(value)
                rows = block_rows.get(bytes(key[:FP_BYTES]) + _BLOCK_NUMBER.pack(block))
                if rows is None or row >= rows:
                    report.problems.append(f"key {bytes(key[FP_BYTES:]).hex()} points at a missing vector")

    def prune(self, fingerprint: str | None = None, dataset: str | None = None) -> int:
        """Drop a fingerprint's vectors, errors and metadata, and/or a dataset's manifest; return
        entries removed. A fingerprint or dataset the store does not hold is an error that lists
        what it holds (a typo must not pass for a prune), and then nothing is removed."""
        self._guard()
        removed = 0
        with self._write() as txn:
            if fingerprint is not None:
                removed += self._prune_fingerprint(txn, fingerprint)
            if dataset is not None:
                if not dataset or not txn.delete(dataset.encode(), db=self._manifests):  # LMDB refuses b"" keys
                    raise self._no_dataset(txn, dataset)
                txn.delete(dataset.encode(), db=self._extracted)
                removed += 1
        return removed

    def _prune_fingerprint(self, txn: Any, fingerprint: str) -> int:
        fp = _fp(fingerprint)
        known = self._stored_fingerprints(txn) | {bytes(key) for key, _ in txn.cursor(db=self._fingerprints)}
        if fp not in known:
            raise StoreError(f"no fingerprint {fingerprint} in {self.path}; fingerprints: "
                             f"{', '.join(sorted(f.hex() for f in known)) or 'none'} (see `hubtune cache ls`)")
        removed = 0
        for db in (self._blocks, self._keys, self._errors):
            cursor = txn.cursor(db=db)
            if cursor.set_range(fp):
                while cursor.key()[:FP_BYTES] == fp:
                    removed += 1
                    if not cursor.delete():
                        break
        removed += int(txn.delete(fp, db=self._fingerprints))
        stale = [bytes(k) for k, v in txn.cursor(db=self._requests) if bytes(v) == fp]
        for key in stale:
            txn.delete(key, db=self._requests)
        for name, value in list(txn.cursor(db=self._extracted)):
            kept = b"".join(f for f in _split_fingerprints(value) if f != fp)
            if kept != value:
                txn.put(name, kept, db=self._extracted)
        return removed


def manifest_keys(manifest: dict[str, list]) -> list[bytes]:
    """A manifest's content keys as bytes, in dataset order (one hex decode for all of them)."""
    joined = bytes.fromhex("".join(manifest["keys"]))
    return [joined[i : i + KEY_BYTES] for i in range(0, len(joined), KEY_BYTES)]


def _split_fingerprints(value: bytes) -> list[bytes]:
    return [bytes(value[i : i + FP_BYTES]) for i in range(0, len(value), FP_BYTES)]
