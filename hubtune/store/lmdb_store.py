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
``fork``: each process opens its own (the handle checks). Within a process, handles of one store share
one LMDB environment (LMDB allows one per process): a second ``EmbeddingStore(path)`` while one is open
(another thread's, ``hubtune serve``'s) reuses it, and the last ``close`` closes it. Threads may use
handles at once; write transactions wait for each other.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

from hubtune.errors import StoreError
from hubtune.store.blocks import (BLOCK_NUMBER, FP_BYTES, KEY_BYTES, LOCATION, PAST_KEYS, decode_block, encode_block,
                                  fingerprint_bytes)
from hubtune.store.environments import OPEN_LOCK, forget_other_processes, open_env, release_env
from hubtune.store.format import check_format
from hubtune.store.maintenance import Maintenance
from hubtune.store.requests import request_key

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MAP_SIZE = 1 << 40  # a virtual reservation, not disk use
_SCAN_PAGE = 65536  # key-index entries read per page when scanning a fingerprint's run
_HANDLES: "weakref.WeakSet[EmbeddingStore]" = weakref.WeakSet()  # open handles, to release after fork


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
    forget_other_processes()


class EmbeddingStore(Maintenance):
    """Vectors by ``(fingerprint, content key)``, dataset manifests and per-item errors."""

    def __init__(self, path: str | Path, *, readonly: bool = False, map_size: int = DEFAULT_MAP_SIZE,
                 max_readers: int = 512):
        """Open (or create) the store at ``path``. ``map_size`` and ``max_readers`` apply when this
        process has no handle on it yet (an open one is shared as it is)."""
        self.path = Path(path)
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not (self.path / "data.mdb").is_file():
            raise StoreError(f"no embedding store at {self.path} (run `hubtune extract` first)")
        self._pid = os.getpid()
        release_inherited()
        with OPEN_LOCK:  # one environment per store and process, opened and stamped once
            self.env = open_env(self.path, readonly, map_size, max_readers)
            _HANDLES.add(self)
            create = not readonly
            try:
                check_format(self.env, self.path, create)
            except StoreError:
                _HANDLES.discard(self)
                release_env(self.path, self.env)
                raise
        self._closed = False
        self._fingerprints = self.env.open_db(b"fingerprints", create=create)
        self._blocks = self.env.open_db(b"blocks", create=create)
        self._keys = self.env.open_db(b"keys", create=create)
        self._errors = self.env.open_db(b"errors", create=create)
        self._manifests = self.env.open_db(b"manifests", create=create)
        self._requests = self.env.open_db(b"requests", create=create)
        self._extracted = self.env.open_db(b"extracted", create=create)

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
        if os.getpid() == self._pid and not self._closed:
            self._closed = True
            _HANDLES.discard(self)
            with OPEN_LOCK:
                release_env(self.path, self.env)

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
            txn.put(fingerprint_bytes(fingerprint), value, db=self._fingerprints, overwrite=False)

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        self._guard()
        with self.env.begin() as txn:
            return {key.hex(): json.loads(value) for key, value in txn.cursor(db=self._fingerprints)}

    def remember_request(self, request: dict[str, Any], fingerprint: str) -> None:
        """Record which fingerprint an extract request resolved to."""
        self._guard()
        with self._write() as txn:
            txn.put(request_key(request), fingerprint_bytes(fingerprint), db=self._requests)

    def recall_request(self, request: dict[str, Any]) -> str | None:
        self._guard()
        with self.env.begin() as txn:
            value = txn.get(request_key(request), db=self._requests)
        return None if value is None else bytes(value).hex()

    # -- vectors ---------------------------------------------------------------------------------
    def _next_block(self, txn: Any, fp: bytes) -> int:
        cursor = txn.cursor(db=self._blocks)
        if cursor.set_range(fp + b"\xff" * 8):
            found = cursor.prev()
        else:
            found = cursor.last()
        if found and cursor.key()[:FP_BYTES] == fp:
            return BLOCK_NUMBER.unpack(cursor.key()[FP_BYTES:])[0] + 1
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
        fp = fingerprint_bytes(fingerprint)
        if len(keys) != len(vectors):
            raise StoreError(f"{len(keys)} keys for {len(vectors)} vectors")
        with self._write() as txn:
            first = {key: i for i, key in reversed(list(enumerate(keys)))}  # a key twice in a batch: once
            fresh = [i for i, key in enumerate(keys) if first[key] == i and txn.get(fp + key, db=self._keys) is None]
            written = 0
            if fresh:
                block = self._next_block(txn, fp)
                txn.put(fp + BLOCK_NUMBER.pack(block), encode_block(vectors[fresh]), db=self._blocks)
                for row, index in enumerate(fresh):
                    txn.put(fp + keys[index], LOCATION.pack(block, row), db=self._keys)
                    txn.delete(fp + keys[index], db=self._errors)
                written = len(fresh)
            for key, record in (errors or {}).items():
                if txn.get(fp + key, db=self._keys) is None:
                    txn.put(fp + key, json.dumps(record, sort_keys=True).encode(), db=self._errors)
        return written

    def has(self, fingerprint: str, keys: Iterable[bytes]) -> list[bool]:
        """Which keys already have a vector under this fingerprint."""
        self._guard()
        fp = fingerprint_bytes(fingerprint)
        with self.env.begin() as txn:
            return [txn.get(fp + key, db=self._keys) is not None for key in keys]

    def locate(self, fingerprint: str, keys: Sequence[bytes]) -> "np.ndarray":
        """``(N, 2)`` int64 ``(block, row)`` of each key; ``-1`` rows for keys with no vector.

        Few keys: one point lookup each. Many keys (a whole dataset): one sequential scan of the
        fingerprint's key index and a vectorised sorted search, several times faster.
        """
        import numpy as np

        self._guard()
        fp = fingerprint_bytes(fingerprint)
        locations = np.full((len(keys), 2), -1, dtype=np.int64)
        with self.env.begin(buffers=False) as txn:
            if len(keys) and len(keys) * 4 >= txn.stat(self._keys)["entries"]:
                return self._locate_by_scan(txn, fp, keys, locations)
            lookup = txn.get
            for i, key in enumerate(keys):
                value = lookup(fp + key, db=self._keys)
                if value is not None:
                    locations[i] = LOCATION.unpack(value)
        return locations

    def _locate_by_scan(self, txn: Any, fp: bytes, keys: Sequence[bytes], locations: "np.ndarray") -> "np.ndarray":
        import numpy as np

        cursor = txn.cursor(db=self._keys)
        if not cursor.set_range(fp):
            return locations
        # keys sort by fingerprint first: the run for this fingerprint is contiguous, and its end is
        # found by bisecting pages of it (no Python call per key)
        past_run = (fp + PAST_KEYS,)
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
                value = txn.get(fingerprint_bytes(fingerprint) + BLOCK_NUMBER.pack(int(locations[0, 0])), db=self._blocks)
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
        fp = fingerprint_bytes(fingerprint)
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
                    value = txn.get(fp + BLOCK_NUMBER.pack(block), db=self._blocks)
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
        fp = fingerprint_bytes(fingerprint)
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
        return sum(1 for _ in self._iter_prefix(self._keys, fingerprint_bytes(fingerprint)))

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
