"""CLI for runs past one machine: ``extract --engine ray|torchrun``, ``merge``, ``index build-sharded``.

``extract`` keeps its own options; :func:`engine_options` adds the engine's, and
:func:`extract_on_engine` is what it calls when ``--engine`` is not ``local``.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from hubtune.cli.common import cache_option, emit, json_option, print_table, resolve_cache, resolve_workers

SUMMARY_COLUMNS = ["dataset", "engine", "total", "computed", "cached", "failed", "shards", "shards_run", "items_per_s",
                   "seconds"]


def engine_options(func: Callable) -> Callable:
    """``--engine``, ``--address``, ``--shards``, ``--shards-dir``, ``--gpus-per-worker``, ``--cpus-per-worker``,
    ``--decoders``, gathered into one ``scale`` dict argument."""
    options = [
        click.option("--engine", type=click.Choice(["local", "ray", "torchrun"]), default="local", show_default=True,
                     help="local: this process. ray: shards over a Ray Data actor pool (pip install 'hubtune[ray]'); "
                     "--workers is then the number of actors. torchrun: launch with `torchrun --nproc_per_node=K "
                     "-m hubtune extract ... --engine torchrun`; rank r runs shards i with i % K == r."),
        click.option("--address", default=None, help="ray: the cluster to join (auto, ray://HOST:10001); "
                     "default: the running one, else a new local one."),
        click.option("--shards", type=click.IntRange(min=1), default=None,
                     help="ray/torchrun: number of shards (default: one per 10,000 items)."),
        click.option("--shards-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="ray/torchrun: keep the shard files here (a folder every worker can write); merged into "
                     "the store only when --cache is also given. Default: CACHE/shards-tmp/DATASET, deleted after the merge."),
        click.option("--gpus-per-worker", type=click.FloatRange(min=0), default=0, show_default=True,
                     help="ray: GPUs each actor reserves (1 on GPU nodes; 0 embeds on CPU)."),
        click.option("--cpus-per-worker", type=click.IntRange(min=1), default=1, show_default=True,
                     help="ray: CPUs each actor reserves; it decodes with this many minus one DataLoader processes."),
        click.option("--decoders", type=click.IntRange(min=0), default=0, show_default=True,
                     help="ray: read and preprocess in this many separate one-CPU, no-GPU actors (any node with free "
                     "CPUs, CPU-only nodes included), which hand each shard's tensors to the embedding actors; "
                     "0: each embedding actor decodes its own shards."),
    ]
    for option in reversed(options):
        func = option(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["scale"] = {name: kwargs.pop(name) for name in
                           ("engine", "address", "shards", "shards_dir", "gpus_per_worker", "cpus_per_worker", "decoders")}
        return func(*args, **kwargs)

    return wrapper


def extract_on_engine(scale: dict[str, Any], ref: str, data: Path, cache_dir: Path | None, run: Any, *, workers: str,
                      shard: str | None, as_json: bool) -> None:
    """``hubtune extract --engine ray|torchrun``: plan, run the shards, merge; print the summary.

    ``run`` is the same :class:`~hubtune.extract.ExtractOptions` a local extract gets."""
    from dataclasses import replace

    from hubtune.data import open_dataset
    from hubtune.extract import TooManyFailures
    from hubtune.scale.driver import extract_sharded

    if shard is not None or run.compile:
        raise click.UsageError("--shard and --compile are for --engine local; with --engine ray|torchrun "
                               "the engine splits the dataset itself (--shards N)")
    engine = scale["engine"]
    if scale["decoders"] and engine != "ray":
        raise click.UsageError("--decoders is for --engine ray (torchrun ranks decode in their own DataLoader workers)")
    if engine == "ray":
        pool = None if workers == "auto" else resolve_workers(workers, "image")
    else:
        pool = resolve_workers(workers, open_dataset(data).modality)
    cache = None if cache_dir is None and scale["shards_dir"] is not None else resolve_cache(cache_dir)
    result = extract_sharded(
        engine, ref, data, replace(run, workers=pool), cache=cache, shards_dir=scale["shards_dir"],
        shards=scale["shards"], gpus_per_worker=scale["gpus_per_worker"], cpus_per_worker=scale["cpus_per_worker"],
        decoders=scale["decoders"], address=scale["address"],
    )
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return
    emit(result.as_dict(), as_json, lambda row: print_table([row], SUMMARY_COLUMNS))
    if run.max_failures is not None and result.total and result.failed / result.total > run.max_failures:
        raise TooManyFailures(f"{result.failed} of {result.total} items failed, over --max-failures "
                              f"{run.max_failures:.1%}; see them with `hubtune cache errors`")


@click.command()
@click.option("--shards", "shards_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A shards folder written by `extract --engine ray|torchrun --shards-dir`.")
@cache_option
@json_option
def merge(shards_dir: Path, cache_dir: Path | None, as_json: bool) -> None:
    """Import a finished shards folder into the store (same keys and fingerprint as a local run).

    Checks every shard's files against its marker first; the dataset's manifest is recorded last,
    so `export`, `index build` and `train` then work as after a local `extract`. Safe to repeat.
    """
    from hubtune.scale.merge import merge as merge_shards
    from hubtune.store import EmbeddingStore

    with EmbeddingStore(resolve_cache(cache_dir)) as store:
        result = merge_shards(shards_dir, store).as_dict()
    emit(result, as_json, lambda row: print_table([row], list(row)))


@contextlib.contextmanager
def _native_stdout_to_stderr() -> Iterator[None]:
    """faiss' C++ code prints progress to file descriptor 1; keep stdout for the table or JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


@click.command("build-sharded")
@click.option("--shards", "shards_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="A finished shards folder (`extract --engine ray|torchrun --shards-dir`).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for merged.index, merged.ivfdata and the sidecar (movable as a whole).")
@click.option("--kind", type=click.Choice(["auto", "ivf", "ivfpq"]), default="auto", show_default=True,
              help="auto: IVF-Flat while the vectors fit in --max-memory, else IVF-PQ.")
@click.option("--metric", type=click.Choice(["cosine", "l2"]), default="cosine", show_default=True)
@click.option("--max-memory", type=click.IntRange(min=1), default=4 << 30, show_default=True, help="Bytes.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Shards added in parallel (each into its own copy of the trained index).")
@json_option
def index_build_sharded(shards_dir: Path, out: Path, kind: str, metric: str, max_memory: int, threads: int,
                        as_json: bool) -> None:
    """IVF index straight from shard files: train once on a sample, add shards with their real ids, merge on disk.

    Ids are rows in the dataset's export order. The merged index keeps its inverted lists in
    OUT/merged.ivfdata, read from disk at search time, and loads after OUT is moved.
    """
    from hubtune.index.sharded import build_sharded

    with _native_stdout_to_stderr():
        result = build_sharded(shards_dir, out, kind=kind, metric=metric, max_memory=max_memory, threads=threads)
    emit(result, as_json, lambda row: print_table([row], ["kind", "rows", "shards", "nlist", "path"]))
