"""The flow ``hubtune extract --engine ray|torchrun`` follows: plan, run the shards, merge.

Without ``--shards-dir`` the shard files live in ``CACHE/shards-tmp/DATASET`` (a path every rank
and every rerun finds again, so an interrupted run resumes) and are deleted after a successful
merge; with it they are kept, and merged only when ``--cache`` is also given.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from hubtune.data import open_dataset
from hubtune.extract.options import ExtractOptions, ExtractSummary
from hubtune.scale.shards import Plan, Shard, pending, read_marker, read_plan, write_plan

ENGINES = ("local", "ray", "torchrun")


def _merge(folder: Path, cache: Path) -> dict[str, Any]:
    from hubtune.scale.merge import merge
    from hubtune.store import EmbeddingStore

    with EmbeddingStore(cache) as store:
        return merge(folder, store).as_dict()


def extract_sharded(engine: str, ref: str, data: str | Path, run: ExtractOptions | None = None, *,
                    cache: Path | None, shards_dir: Path | None, shards: int | None = None,
                    gpus_per_worker: float = 0, cpus_per_worker: float = 1, decoders: int = 0,
                    address: str | None = None, **settings: Any) -> ExtractSummary | None:
    """Embed ``data`` over shards with ``engine``; the summary, or None on torchrun ranks other than 0.

    ``run`` (and keyword ``settings`` overriding its fields) are the settings a local
    :func:`hubtune.extract.extract` takes; ``run.workers`` is the Ray actor pool's size for ``ray``
    (None: as many as fit) and the DataLoader processes per rank for ``torchrun``. The rest is the
    engine's: ``decoders`` (ray only) moves reading and decoding to that many CPU-only actors.
    ``cache`` None with ``shards_dir`` set: shard files only, no merge. ``run.max_failures`` is the
    caller's to check, on the returned summary.
    """
    started = time.perf_counter()
    run = replace(run or ExtractOptions(workers=None), **settings)
    options, stored_dtype, batch_size, workers, progress = (run.options, run.stored_dtype, run.batch_size, run.workers,
                                                            run.progress)
    dataset = open_dataset(data)
    name = dataset.name(run.dataset_name)
    folder = shards_dir or cache / "shards-tmp" / name

    todo: list[Shard] = []

    def plan_once() -> Plan:
        plan = write_plan(folder, dataset, name, ref, options, stored_dtype, shards)
        todo.extend(pending(folder, plan))  # before any shard runs: what this run computes
        return plan

    def merge_once() -> dict[str, Any] | None:
        return _merge(folder, cache) if cache is not None else None

    if engine == "ray":
        from hubtune.scale import ray_engine

        plan = plan_once()
        ray_engine.run(folder, plan, workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                       decoders=decoders, batch_size=batch_size, address=address, progress=progress)
        merged = merge_once()
    elif engine == "torchrun":
        from hubtune.scale import torchrun_engine

        rank, _, merged = torchrun_engine.run(plan_once, str(folder), batch_size=batch_size, workers=workers or 0,
                                              merge_once=merge_once)
        if rank != 0:
            return None
        plan = read_plan(folder)
    else:
        raise ValueError(f"engine {engine!r}; expected ray or torchrun (local runs go through hubtune.extract)")
    seconds = time.perf_counter() - started
    markers = [read_marker(folder, shard) for shard in plan.shards]
    ran = [marker for marker in markers if marker and marker["shard"] in {shard.index for shard in todo}]
    ran_items = sum(marker["items"] for marker in ran)
    if merged is not None and shards_dir is None:
        shutil.rmtree(folder)
    return ExtractSummary(
        dataset=name, engine=engine, total=plan.items, computed=sum(m["vectors"] for m in ran),
        cached=plan.items - ran_items, failed=sum(m["failed"] for m in markers if m),
        items_per_s=round(ran_items / seconds, 1) if ran_items else 0.0, seconds=round(seconds, 3),
        shards=len(plan.bounds), shards_run=len(ran), fingerprint=markers[0]["fingerprint"] if markers[0] else None,
        merged=merged is not None, shards_dir=str(folder) if shards_dir is not None else None,
    )
