"""The Ray Data engine: the plan's pending shards as a dataset, mapped over an actor pool.

Each actor holds one :class:`~hubtune.scale.shards.ShardRunner`, so the model is loaded once per actor
and reused for every shard it is handed (``batch_size=1``: one shard per call). GPU actors ask Ray
for ``gpus_per_worker`` GPUs and so land on GPU nodes; each reserves ``cpus_per_worker`` CPUs and
decodes with that many minus one DataLoader processes. A failed or killed actor is restarted and
its shard retried by Ray Data itself (its actor pools default to ``max_restarts=-1`` and
``max_task_retries=-1``); hubtune adds no retry logic of its own. A retried shard simply runs
again: its files are written through atomic renames, the marker last. With ``decoders`` a first
actor pool of CPU-only actors reads and preprocesses the shards and hands their tensors to the
embedding actors (:mod:`hubtune.scale.decode_stage`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.errors import RayMissingError, ShardError
from hubtune.scale.shards import Plan, Shard, ShardRunner, pending, read_items

if TYPE_CHECKING:
    import numpy as np


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayMissingError("--engine ray needs Ray Data: pip install 'hubtune[ray]' "
                              "(or use --engine torchrun, which needs nothing extra)") from exc
    return ray


class _ShardActor:
    """A Ray Data callable class: one per actor, the model loaded on its first shard."""

    def __init__(self, folder: str, batch_size: int, workers: int):
        self.runner = ShardRunner(folder, batch_size=batch_size, workers=workers)

    def __call__(self, batch: dict[str, "np.ndarray"]) -> dict[str, "np.ndarray"]:
        import numpy as np

        from hubtune.scale.decode_stage import node_id, preprocess_digest, unpack

        markers = []
        for row, (i, start, stop) in enumerate(zip(batch["index"], batch["start"], batch["stop"])):
            shard, prepared = Shard(int(i), int(start), int(stop)), None
            if "payload" in batch:  # decoded by a decode actor (--decoders): check it preprocessed as we do
                if batch["preprocess"][row] != preprocess_digest(self.runner.load()):
                    raise ShardError(f"{shard.name} was preprocessed with another config than this actor's model "
                                     "uses: install the same hubtune and library versions on every node")
                prepared = unpack(read_items(self.runner.folder, shard), batch["payload"][row], batch["errors"][row])
            markers.append(self.runner(shard, prepared))
        out = {name: np.array([marker[name] for marker in markers]) for name in ("shard", "vectors", "failed")}
        out["embedded_on"] = np.array([node_id()] * len(markers), dtype=object)
        if "decoded_on" in batch:
            out["decoded_on"] = batch["decoded_on"]
        return out


def run(folder: str | Path, plan: Plan, *, workers: int | None = None, gpus_per_worker: float = 0,
        cpus_per_worker: float = 1, decoders: int = 0, batch_size: int = 64, address: str | None = None,
        progress: bool = True) -> list[dict[str, Any]]:
    """Run the plan's pending shards on a Ray cluster; returns ``{shard, vectors, failed, embedded_on
    [, decoded_on]}`` per shard run (node ids).

    ``address`` connects to a running cluster (``auto``, ``ray://host:10001``, a GCS address); with
    none, an already initialised Ray is used, else a local one is started. ``workers`` caps the
    embedding actor pool (None: as many as the cluster's free resources allow). ``decoders`` > 0
    reads and preprocesses in that many CPU-only actors instead (:mod:`hubtune.scale.decode_stage`).
    """
    ray = import_ray()
    todo = pending(folder, plan)
    if not todo:
        return []
    if not ray.is_initialized():
        ray.init(address=address) if address else ray.init(include_dashboard=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    rows = [{"index": s.index, "start": s.start, "stop": s.stop} for s in todo]
    shards = ray.data.from_items(rows, override_num_blocks=len(rows))
    if decoders:
        from hubtune.scale.decode_stage import ShardDecoder

        shards = shards.map_batches(
            ShardDecoder,
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=decoders),
            fn_constructor_kwargs={"folder": str(folder)},
            num_cpus=1,
            num_gpus=0,
        )
    results = shards.map_batches(
        _ShardActor,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=workers),
        fn_constructor_kwargs={"folder": str(folder), "batch_size": batch_size,
                               "workers": 0 if decoders else max(0, int(cpus_per_worker) - 1)},
        num_gpus=gpus_per_worker or None,
        num_cpus=cpus_per_worker,
    )
    return [{key: value if isinstance(value, str) else int(value) for key, value in row.items()}
            for row in results.iter_rows()]
