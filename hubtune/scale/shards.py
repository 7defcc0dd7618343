"""Shards: the one unit of work every distributed engine (Ray Data, torchrun, a Slurm array) maps.

A shard is a fixed range ``[start, stop)`` of a dataset's manifest. The driver lists the dataset
once and writes the *plan* into a shared folder; any process that can read that folder can then
run any shard, with no other coordination. The folder::

    plan.json                    dataset name, model request, item count, keys digest, shard bounds
    items/shard-000000.jsonl     the shard's items, as the driver listed them (key, label, split, ...)
    emb/shard-000000.npy         vectors in the stored dtype (float16 by default): one row per item
                                 whose status is ok, in item order; (0, dim) when every item failed
    meta/shard-000000.parquet    one row per item: key, origin, label, split, status, error
    _done/shard-000000.json      the marker, written last: counts, fingerprint, sha256 of both files

Every file goes through a temporary name and an atomic rename, the marker last, so a shard with a
marker is complete and is skipped on rerun, a shard without one is redone, and two copies of one
shard running at once write identical bytes (the marker holds no time, host or pid).

A worker embeds its shard with the ordinary extractor into a private LMDB store in local temporary
space (never the shared folder: LMDB wants a local file system), then reads the vectors back in
item order. Merging shards into the real store is :mod:`hubtune.scale.merge`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hubtune.atomic import atomic_write
from hubtune.backbone import LoadOptions
from hubtune.data import Dataset, Item
from hubtune.errors import ShardError
from hubtune.fingerprint import canonical_json, hash_file

if TYPE_CHECKING:
    from hubtune.backbone import Backbone

PLAN_FORMAT = 1
DEFAULT_SHARD_ITEMS = 10_000


@dataclass(frozen=True)
class Shard:
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"shard-{self.index:06d}"


def split(total: int, shards: int | None = None, shard_items: int = DEFAULT_SHARD_ITEMS) -> list[Shard]:
    """``shards`` near-equal, never-empty ranges of ``total`` items (default: ``shard_items`` each)."""
    count = shards if shards is not None else -(-total // shard_items)
    count = max(1, min(count, total))
    return [Shard(i, i * total // count, (i + 1) * total // count) for i in range(count)]


@dataclass
class Plan:
    """What a shards folder holds; a rerun must plan exactly the same thing to reuse it."""

    dataset: str
    data: str
    ref: str
    options: dict[str, Any]
    stored_dtype: str
    items: int
    keys_digest: str
    bounds: list[list[int]] = field(default_factory=list)
    format: int = PLAN_FORMAT

    @property
    def shards(self) -> list[Shard]:
        return [Shard(i, start, stop) for i, (start, stop) in enumerate(self.bounds)]

    def load_options(self) -> LoadOptions:
        return LoadOptions(**self.options)


def _write_json(path: Path, value: Any) -> None:
    atomic_write(path, lambda temporary: Path(temporary).write_text(canonical_json(value) + "\n"))


def _item_row(item: Item) -> str:
    row = [item.key.hex(), item.label, item.split, item.origin, item.text, item.path]
    # a table row that is not UTF-8 travels as its bytes; other rows keep the six fields plans always had
    return canonical_json(row if item.data is None else [*row, item.data.hex()])


def read_plan(folder: str | Path) -> Plan:
    path = Path(folder) / "plan.json"
    if not path.is_file():
        raise ShardError(f"{folder} holds no shard plan (plan.json); run `hubtune extract ... --engine ray|torchrun "
                         f"--shards-dir {folder}` first")
    return Plan(**json.loads(path.read_text()))


def write_plan(folder: str | Path, dataset: Dataset, name: str, ref: str, options: LoadOptions,
               stored_dtype: str, shards: int | None = None) -> Plan:
    """List ``dataset`` once and write its plan and per-shard item lists (the plan last).

    An existing plan is reused when it is the same plan, and refused when it is another one:
    mixing shards of two plans would merge vectors of the wrong items.
    """
    folder = Path(folder)
    items = dataset.items()
    digest = hashlib.blake2b(b"".join(item.key for item in items), digest_size=16).hexdigest()
    plan = Plan(dataset=name, data=str(dataset.location.resolve()), ref=ref, options=asdict(options),
                stored_dtype=stored_dtype, items=len(items), keys_digest=digest,
                bounds=[[s.start, s.stop] for s in split(len(items), shards)])
    if (folder / "plan.json").is_file():
        existing = read_plan(folder)
        if shards is None:  # a rerun without --shards keeps the existing split
            plan.bounds = existing.bounds
        if asdict(existing) != asdict(plan):
            differ = [key for key, value in asdict(plan).items() if asdict(existing).get(key) != value]
            raise ShardError(f"{folder} holds shards of another plan (differs in: {', '.join(differ)}); "
                             "use a fresh --shards-dir, or delete this one to start over")
        return existing
    if not items:
        raise ShardError(f"{dataset.location}: the dataset has no items to shard")
    for shard in plan.shards:
        rows = "".join(_item_row(item) + "\n" for item in items[shard.start : shard.stop])
        atomic_write(folder / "items" / f"{shard.name}.jsonl", lambda temporary: Path(temporary).write_text(rows))
    _write_json(folder / "plan.json", asdict(plan))
    return plan


def read_items(folder: str | Path, shard: Shard) -> list[Item]:
    items = []
    for line in (Path(folder) / "items" / f"{shard.name}.jsonl").read_text().splitlines():
        key, label, split_name, origin, text, path, *data = json.loads(line)
        items.append(Item(bytes.fromhex(key), label, split_name, origin, text=text, path=path,
                          data=bytes.fromhex(data[0]) if data else None))
    return items


def marker_path(folder: str | Path, shard: Shard) -> Path:
    return Path(folder) / "_done" / f"{shard.name}.json"


def read_marker(folder: str | Path, shard: Shard) -> dict[str, Any] | None:
    path = marker_path(folder, shard)
    return json.loads(path.read_text()) if path.is_file() else None


def pending(folder: str | Path, plan: Plan) -> list[Shard]:
    """Shards with no marker yet (to run, or to run again)."""
    return [shard for shard in plan.shards if not marker_path(folder, shard).is_file()]


@dataclass(frozen=True)
class _Listed(Dataset):
    """A dataset whose items were listed elsewhere (the driver's plan): the extractor takes it as is."""

    listed: tuple[Item, ...] = ()

    def items(self) -> list[Item]:
        return list(self.listed)


class ShardRunner:
    """Runs shards of one plan; loads the model once, on the first shard that needs it."""

    def __init__(self, folder: str | Path, *, batch_size: int = 64, workers: int = 0):
        self.folder = Path(folder)
        self.plan = read_plan(folder)
        self.options = self.plan.load_options()
        self.batch_size = batch_size
        self.workers = workers
        self.backbone: "Backbone | None" = None

    def load(self) -> "Backbone":
        """The plan's backbone, loaded on first use and kept."""
        if self.backbone is None:
            from hubtune.api import load_backbone

            self.backbone = load_backbone(self.plan.ref, self.options)
        return self.backbone

    def __call__(self, shard: Shard, prepared: "Mapping[bytes, Any] | None" = None) -> dict[str, Any]:
        """Run ``shard`` unless its marker exists; return the marker. ``prepared``: see :func:`run_shard`."""
        done = read_marker(self.folder, shard)
        if done is not None:
            return done
        return run_shard(self.load(), self.folder, self.plan, shard, batch_size=self.batch_size, workers=self.workers,
                         prepared=prepared)


def run_shard(backbone: "Backbone", folder: str | Path, plan: Plan, shard: Shard, *, batch_size: int = 64,
              workers: int = 0, prepared: "Mapping[bytes, Any] | None" = None) -> dict[str, Any]:
    """Embed one shard and write its vectors, its item table and, last, its marker.

    ``prepared``: the shard's samples, already read and preprocessed by another process (by item
    key; see :func:`hubtune.extract.extract`); None reads and decodes them here.
    """
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore

    folder = Path(folder)
    items = read_items(folder, shard)
    dtype = plan.stored_dtype
    with tempfile.TemporaryDirectory(prefix=f"hubtune-{shard.name}-") as scratch:
        with EmbeddingStore(scratch) as store:
            summary = extract(plan.ref, _Listed(Path(plan.data), backbone.modality, tuple(items)), store,
                              options=plan.load_options(), batch_size=batch_size, workers=workers, stored_dtype=dtype,
                              shard=(0, len(items)), progress=False, backbone=backbone, prepared=prepared)
            fingerprint = summary.fingerprint
            errors = store.errors(fingerprint)
            ok = [item.key for item in items if item.key not in errors]
            vectors = store.get(fingerprint, ok, dtype=dtype)
    if vectors.shape[0] == 0:
        vectors = vectors.reshape(0, backbone.dim)
    emb = folder / "emb" / f"{shard.name}.npy"
    meta = folder / "meta" / f"{shard.name}.parquet"
    atomic_write(emb, lambda temporary: _save_npy(temporary, vectors))
    atomic_write(meta, lambda temporary: _save_meta(temporary, items, errors))
    marker = {
        "shard": shard.index, "start": shard.start, "stop": shard.stop, "items": len(items),
        "vectors": int(vectors.shape[0]), "failed": len(items) - len(ok), "fingerprint": fingerprint,
        "fields": backbone.fingerprint_fields(dtype), "dim": backbone.dim, "dtype": dtype,
        "sha256": {"emb": hash_file(emb, hashlib.sha256()).hexdigest(), "meta": hash_file(meta, hashlib.sha256()).hexdigest()},
    }
    _write_json(marker_path(folder, shard), marker)
    return marker


def _save_npy(path: str, vectors: Any) -> None:
    import numpy as np

    with open(path, "wb") as handle:  # np.save(path) would append ".npy" to the temporary name
        np.save(handle, vectors)


META_COLUMNS = ("key", "origin", "label", "split", "status", "error")


def _save_meta(path: str, items: Sequence[Item], errors: dict[bytes, dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {
        "key": [item.key.hex() for item in items],
        "origin": [item.origin for item in items],
        "label": [item.label for item in items],
        "split": [item.split for item in items],
        "status": ["failed" if item.key in errors else "ok" for item in items],
        "error": [errors[item.key]["reason"] if item.key in errors else None for item in items],
    }
    schema = pa.schema([(name, pa.string()) for name in META_COLUMNS])
    pq.write_table(pa.table(columns, schema=schema), path)
