"""The torchrun engine: rank ``r`` of ``world`` runs the plan's shards ``i`` with ``i % world == r``.

Launched as ``torchrun --nproc_per_node=K -m hubtune extract ... --engine torchrun`` (or by a Slurm
launcher that sets the same ``RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT``). The
process group (gloo: it needs no GPU and only carries barriers) orders three steps: rank 0 writes
the plan; every rank runs its shards; rank 0 merges. Each rank embeds on ``cuda:LOCAL_RANK`` when
``--device auto`` and GPUs are present. A rank that dies fails the launch; rerunning the same
command skips every shard whose marker is there.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Callable

from hubtune.errors import LaunchError
from hubtune.scale.shards import Plan, ShardRunner


def rank_and_world() -> tuple[int, int]:
    """``RANK`` and ``WORLD_SIZE`` as torchrun sets them."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise LaunchError("--engine torchrun reads RANK and WORLD_SIZE, which are not set; launch with "
                          "`torchrun --nproc_per_node=K -m hubtune extract ... --engine torchrun` "
                          "(under Slurm: srun torchrun ... with --rdzv-endpoint set to the first node)")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def run(plan_once: Callable[[], Plan], folder: str, *, batch_size: int = 64, workers: int = 0,
        merge_once: Callable[[], Any] | None = None) -> tuple[int, list[dict[str, Any]], Any]:
    """Plan on rank 0, run this rank's shards, merge on rank 0; returns (rank, markers, merge result)."""
    import torch.distributed as dist

    rank, world = rank_and_world()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    # ranks wait at the barriers for the slowest rank's shards: hours, not gloo's default 30 minutes
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(days=7))
    try:
        if rank == 0:
            plan_once()
        dist.barrier()
        runner = ShardRunner(folder, batch_size=batch_size, workers=workers)
        if runner.options.device == "auto":
            import torch

            if torch.cuda.is_available():
                runner.options.device = f"cuda:{local_rank % torch.cuda.device_count()}"
        mine = [shard for shard in runner.plan.shards if shard.index % world == rank]
        markers = [runner(shard) for shard in mine]
        dist.barrier()
        merged = merge_once() if rank == 0 and merge_once is not None else None
        dist.barrier()
        return rank, markers, merged
    finally:
        dist.destroy_process_group()
