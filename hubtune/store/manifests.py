"""Dataset names and manifests: what a dataset is called, which items it holds (in order, with
labels, splits and origins), and under which fingerprints it was extracted.

:class:`Manifests` holds the store's dataset methods; :class:`~hubtune.store.EmbeddingStore`
inherits them (they use its LMDB handles: ``manifests``, ``extracted``, ``keys``, ``errors``).
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Iterator, Sequence

from hubtune.errors import DatasetNameError, StoreError
from hubtune.store.blocks import FP_BYTES, KEY_BYTES, PAST_KEYS, split_fingerprints

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


def manifest_keys(manifest: dict[str, list]) -> list[bytes]:
    """A manifest's content keys as bytes, in dataset order (one hex decode for all of them)."""
    joined = bytes.fromhex("".join(manifest["keys"]))
    return [joined[i : i + KEY_BYTES] for i in range(0, len(joined), KEY_BYTES)]


class Manifests:
    """The dataset methods of :class:`~hubtune.store.EmbeddingStore`."""

    path: Path
    env: Any
    _keys: Any
    _errors: Any
    _manifests: Any
    _extracted: Any  # the store's handles, opened by EmbeddingStore

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
            known = set(split_fingerprints(self._recorded(txn, name) or b"")) if same else set()
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
                more = cursor.set_range(fp + PAST_KEYS)
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
        """The fingerprints dataset ``name`` was recorded as extracted with."""
        self._guard()
        return [fp.hex() for fp in self._extracted_with(name)]

    def _extracted_with(self, name: str) -> list[bytes]:
        """The fingerprints dataset ``name`` was extracted with, as recorded with its manifest."""
        with self.env.begin() as txn:
            return split_fingerprints(self._recorded(txn, name) or b"")

    def _recorded(self, txn: Any, name: str) -> bytes | None:
        """The ``extracted`` entry of dataset ``name`` (None: no such dataset)."""
        return txn.get(name.encode(), db=self._extracted)
