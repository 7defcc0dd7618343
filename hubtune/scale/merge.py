"""Merging a shards folder into the LMDB store, so everything after a distributed run works as
after a local one: the same fingerprint, the same content keys, the same error records and the
dataset's manifest (written last, as a local run does).

One process writes (LMDB's single writer); it reads each shard's vectors and item table once,
checks them against the sha256 its marker vouches for, and commits them in blocks of
``CHUNK_ROWS`` rows. Keys already in the store are left as they are, so a merge can be repeated.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.errors import ShardError
from hubtune.fingerprint import hash_file
from hubtune.scale.shards import Plan, Shard, pending, read_marker, read_plan

if TYPE_CHECKING:
    import numpy as np

    from hubtune.store import EmbeddingStore

CHUNK_ROWS = 4096  # one LMDB block (and one durable transaction) per this many vectors


@dataclass
class MergeSummary:
    dataset: str
    fingerprint: str
    shards: int
    items: int
    vectors: int
    written: int
    failed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_shard(folder: str | Path, shard: Shard, marker: dict[str, Any]) -> tuple["np.ndarray", dict[str, list]]:
    """A finished shard's vectors and item table (as columns), checked against its marker."""
    import numpy as np
    import pyarrow.parquet as pq

    folder = Path(folder)
    emb, meta = folder / "emb" / f"{shard.name}.npy", folder / "meta" / f"{shard.name}.parquet"
    for path, kind in ((emb, "emb"), (meta, "meta")):
        if not path.is_file() or hash_file(path, hashlib.sha256()).hexdigest() != marker["sha256"][kind]:
            raise ShardError(f"{path} is missing or does not match its marker's sha256; delete "
                             f"{folder / '_done' / (shard.name + '.json')} and run the extract again to redo the shard")
    return np.load(emb), pq.read_table(meta).to_pydict()


def check_complete(folder: str | Path, plan: Plan) -> list[dict[str, Any]]:
    """Every shard's marker, all with one fingerprint; else a :class:`ShardError` that says what to do."""
    missing = pending(folder, plan)
    if missing:
        names = ", ".join(shard.name for shard in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ShardError(f"{len(missing)} of {len(plan.bounds)} shards in {folder} are not done ({names}); "
                         "run the same extract again: finished shards are skipped")
    markers = [read_marker(folder, shard) for shard in plan.shards]
    fingerprints = {marker["fingerprint"] for marker in markers}
    if len(fingerprints) > 1:
        raise ShardError(f"the shards in {folder} were embedded by {len(fingerprints)} different functions "
                         f"(fingerprints {', '.join(sorted(fingerprints))}), e.g. --precision auto resolving "
                         "differently on different nodes; pass an explicit --precision and a fresh --shards-dir")
    return markers


def merge(folder: str | Path, store: "EmbeddingStore") -> MergeSummary:
    """Import a complete shards folder into ``store`` and record the dataset's manifest."""
    plan = read_plan(folder)
    markers = check_complete(folder, plan)
    first = markers[0]
    fingerprint = first["fingerprint"]
    store.register(fingerprint, first["fields"], first["dim"], first["dtype"])
    manifest: dict[str, list] = {"keys": [], "labels": [], "splits": [], "origins": []}
    written = failed = 0
    for shard, marker in zip(plan.shards, markers):
        vectors, meta = read_shard(folder, shard, marker)
        ok = [bytes.fromhex(key) for key, status in zip(meta["key"], meta["status"]) if status == "ok"]
        errors = {
            bytes.fromhex(key): {"reason": error, "origin": origin}
            for key, origin, status, error in zip(meta["key"], meta["origin"], meta["status"], meta["error"])
            if status != "ok"
        }
        written += _put(store, fingerprint, ok, vectors, errors)
        failed += len(meta["key"]) - len(ok)
        for column, name in (("keys", "key"), ("labels", "label"), ("splits", "split"), ("origins", "origin")):
            manifest[column].extend(meta[name])
    store.put_manifest(plan.dataset, manifest)  # last: a manifest never points at missing vectors
    return MergeSummary(dataset=plan.dataset, fingerprint=fingerprint, shards=len(markers),
                        items=len(manifest["keys"]), vectors=sum(m["vectors"] for m in markers), written=written,
                        failed=failed)


def _put(store: "EmbeddingStore", fingerprint: str, keys: list[bytes], vectors: "np.ndarray",
         errors: dict[bytes, dict[str, Any]]) -> int:
    """Commit one shard in blocks of ``CHUNK_ROWS``, each key once (a shard may repeat an item)."""
    first_row: dict[bytes, int] = {}
    for row, key in enumerate(keys):
        first_row.setdefault(key, row)
    unique_keys, rows = list(first_row), list(first_row.values())
    written = 0
    for start in range(0, len(unique_keys), CHUNK_ROWS):
        chunk = rows[start : start + CHUNK_ROWS]
        written += store.put_batch(fingerprint, unique_keys[start : start + CHUNK_ROWS], vectors[chunk])
    if errors:
        store.put_batch(fingerprint, [], vectors[:0], errors)
    return written
