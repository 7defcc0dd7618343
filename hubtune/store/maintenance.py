"""Store maintenance: ``verify`` (every block's CRC, every key's location, every manifest complete
under the fingerprints it was extracted with) and ``prune``.

:class:`Maintenance` holds these methods; :class:`~hubtune.store.EmbeddingStore` inherits them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hubtune.errors import StoreError
from hubtune.store.blocks import BLOCK_NUMBER, FP_BYTES, LOCATION, decode_block, fingerprint_bytes, split_fingerprints
from hubtune.store.manifests import Manifests, manifest_keys

_LOST = ", which held all of them when the dataset was recorded (entries lost: run its extract again)"


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


class Maintenance(Manifests):
    """``verify`` and ``prune`` of :class:`~hubtune.store.EmbeddingStore`."""

    _blocks: Any
    _fingerprints: Any
    _requests: Any

    def verify(self) -> VerifyReport:
        """Check every block's CRC and every key's location, and that each manifest's items are all
        there under each fingerprint it was extracted with (not under one that merely shares files)."""
        self._guard()
        report = VerifyReport()
        self._verify_vectors(report)
        for name, manifest in self.manifests():
            report.manifests += 1
            keys = manifest_keys(manifest)
            for fp in self._extracted_with(name):
                absent = self._absent(fp, keys)
                if absent:
                    report.problems.append(
                        f"dataset {name!r}: {absent} items have neither a vector nor an error under fingerprint "
                        f"{fp.hex()}{_LOST}"
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
                block, row = LOCATION.unpack(value)
                rows = block_rows.get(bytes(key[:FP_BYTES]) + BLOCK_NUMBER.pack(block))
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
        fp = fingerprint_bytes(fingerprint)
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
            kept = b"".join(f for f in split_fingerprints(value) if f != fp)
            if kept != value:
                txn.put(name, kept, db=self._extracted)
        return removed
