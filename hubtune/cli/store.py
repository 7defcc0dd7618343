"""CLI commands around the embedding store: ``extract``, ``export`` and ``cache ...``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubtune.cli.common import cache_option, emit, json_option, model_options, print_table, resolve_cache, resolve_workers
from hubtune.cli.scale import engine_options, extract_on_engine

STORED_DTYPES = ("float16", "float32")


def _shard(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    start, sep, stop = value.partition(":")
    if not sep or not start.isdigit() or not stop.isdigit() or int(start) >= int(stop):
        raise click.BadParameter(f"{value!r}; expected START:STOP item positions, e.g. 0:10000")
    return int(start), int(stop)


@click.command()
@click.argument("ref")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@cache_option
@click.option("--dataset", "dataset_name", default=None, help="Name to record DATA under (default: its file or folder name).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default="auto", show_default=True,
              help="DataLoader worker processes for reading/decoding (auto: 0 for text, half the CPUs for images).")
@click.option("--stored-dtype", type=click.Choice(STORED_DTYPES), default="float16", show_default=True,
              help="How vectors are kept on disk.")
@click.option("--shard", default=None, help="Only items START:STOP of the dataset (for distributed runs).")
@click.option("--max-failures", type=click.FloatRange(0, 1), default=None,
              help="Exit non-zero when more than this fraction of items fails (all readable items are still stored).")
@click.option("--compile", "compile_model", is_flag=True, help="torch.compile the model (pays off on long runs).")
@click.option("--streams", type=click.IntRange(min=1), default=None,
              help="Forwards run at once, each on its share of the torch threads (default: 2 on a CPU with 2+ "
              "threads, where two one-thread streams beat one two-thread stream; 1 on CUDA).")
@click.option("--refresh", is_flag=True, help="Resolve the model again instead of reusing the fingerprint "
              "this same request resolved to before (e.g. to follow a moving branch).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
@engine_options
@model_options
@json_option
def extract(ref: str, data: Path, cache_dir: Path | None, dataset_name: str | None, batch_size: int, workers: str,
            stored_dtype: str, shard: str | None, max_failures: float | None, compile_model: bool, streams: int | None,
            refresh: bool, progress: bool, scale: dict, options: Any, as_json: bool) -> None:
    """Embed DATA with model REF into the store; items already there are skipped.

    DATA is a folder with one subfolder per class (images, or .txt files; optionally under
    train/val/test), or a .jsonl/.csv/.tsv file with a `text` or `path` column and optional `label`
    and `split`. Unreadable items are recorded with their reason and do not stop the run.
    """
    from hubtune.cache import Cache
    from hubtune.extract import TooManyFailures
    from hubtune.extract.options import ExtractOptions

    if scale["engine"] != "local":
        run = ExtractOptions(options=options, dataset_name=dataset_name, batch_size=batch_size,
                             stored_dtype=stored_dtype, max_failures=max_failures, refresh=refresh,
                             compile=compile_model, progress=progress, streams=streams)
        return extract_on_engine(scale, ref, data, cache_dir, run, workers=workers, shard=shard, as_json=as_json)
    try:  # --workers auto is resolved by the dataset's kind, which Cache.extract knows
        summary = Cache(resolve_cache(cache_dir)).extract(
            ref, data, dataset_name, options=options, batch_size=batch_size,
            workers="auto" if workers == "auto" else resolve_workers(workers, "image"), stored_dtype=stored_dtype,
            max_failures=max_failures, refresh=refresh, compile=compile_model, progress=progress, streams=streams,
            shard=_shard(shard))
    except TooManyFailures as exc:  # the summary is still the run's report (and --json's one document)
        _report(exc.summary, cache_dir, as_json)
        raise
    _report(summary, cache_dir, as_json)


def _report(summary: Any, cache_dir: Path | None, as_json: bool) -> None:
    """The summary (a table, or the JSON document), and on stderr where failed items are listed."""
    emit(summary.as_dict(), as_json, lambda row: print_table(
        [row], ["dataset", "total", "computed", "cached", "failed", "items_per_s", "seconds"]))
    if summary.failed:
        click.echo(
            f"{summary.failed} items failed; see them with: hubtune cache errors --cache {resolve_cache(cache_dir)} "
            f"--dataset {summary.dataset}", err=True,
        )


@click.command()
@cache_option
@click.option("--model", "ref", required=True, help="The model reference extract was given.")
@click.option("--dataset", "dataset_name", required=True, help="The dataset name extract recorded.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--stored-dtype", type=click.Choice(STORED_DTYPES), default=None, help="Match this stored dtype.")
@model_options
@json_option
def export(cache_dir: Path | None, ref: str, dataset_name: str, out: Path, stored_dtype: str | None, options: Any,
           as_json: bool) -> None:
    """Write OUT/embeddings.npy (float32, dataset order) and OUT/items.jsonl (key, label, split, origin).

    Items without a vector (failed, or not extracted yet) are left out; their count is reported.
    Vectors stream through in 8 MB pieces (memory stays flat) with every block's CRC32 checked, and
    each file is renamed into place only when complete: a failed export leaves the previous files.
    """
    from hubtune.cache import Cache

    result = Cache(resolve_cache(cache_dir)).export(ref, dataset_name, out, stored_dtype=stored_dtype, options=options)
    emit(result, as_json, lambda row: print_table([row], ["rows", "dim", "missing", "fingerprint", "path"]))


@click.group()
def cache() -> None:
    """Inspect and maintain an embedding store (ls, verify, errors, prune)."""


@cache.command("ls")
@cache_option
@json_option
def cache_ls(cache_dir: Path | None, as_json: bool) -> None:
    """Fingerprints with their model, options, vector count and bytes, and the datasets."""
    from hubtune.cache import Cache

    cache = Cache(resolve_cache(cache_dir))
    data = {"fingerprints": cache.fingerprints(),
            "datasets": [{"name": entry.name, "items": entry.items} for entry in cache.datasets()]}

    def table(d: dict) -> None:
        print_table(d["fingerprints"], ["fingerprint", "model", "layer", "pool", "precision", "dtype", "dim",
                                        "vectors", "bytes", "errors"], "fingerprints")
        print_table(d["datasets"], ["name", "items"], "datasets")

    emit(data, as_json, table)


@cache.command("verify")
@cache_option
@json_option
def cache_verify(cache_dir: Path | None, as_json: bool) -> None:
    """Check every vector block's CRC and that every manifest points at present vectors; exit 1 on damage."""
    from hubtune.cache import Cache

    report = Cache(resolve_cache(cache_dir)).verify()
    data = {"ok": report.ok, "blocks": report.blocks, "vectors": report.vectors, "manifests": report.manifests,
            "problems": report.problems}

    def table(d: dict) -> None:
        click.echo(f"{'ok' if d['ok'] else 'DAMAGED'}: {d['blocks']} blocks, {d['vectors']} vectors, "
                   f"{d['manifests']} datasets checked")
        for problem in d["problems"]:
            click.echo(f"  {problem}")

    emit(data, as_json, table)
    if not report.ok:
        raise SystemExit(1)


@cache.command("errors")
@cache_option
@click.option("--fingerprint", default=None, help="Only this fingerprint.")
@click.option("--dataset", "dataset_name", default=None, help="Only items of this dataset.")
@json_option
def cache_errors(cache_dir: Path | None, fingerprint: str | None, dataset_name: str | None, as_json: bool) -> None:
    """Items that could not be embedded, with the reason."""
    from hubtune.cache import Cache

    rows = Cache(resolve_cache(cache_dir)).errors(fingerprint=fingerprint, dataset=dataset_name)
    emit(rows, as_json, lambda d: print_table(d, ["origin", "reason", "fingerprint"], f"{len(d)} failed items"))


@cache.command("prune")
@cache_option
@click.option("--fingerprint", default=None, help="Drop this fingerprint's vectors, errors and indexes.")
@click.option("--dataset", "dataset_name", default=None, help="Drop this dataset's manifest and indexes.")
@json_option
def cache_prune(cache_dir: Path | None, fingerprint: str | None, dataset_name: str | None, as_json: bool) -> None:
    """Drop a fingerprint (its vectors and error records) or a dataset manifest, and their FAISS indexes."""
    from hubtune.cache import Cache

    if fingerprint is None and dataset_name is None:
        raise click.UsageError("say what to drop: --fingerprint FP and/or --dataset NAME (see `hubtune cache ls`)")
    result = Cache(resolve_cache(cache_dir)).prune(fingerprint=fingerprint, dataset=dataset_name)
    emit(result, as_json, lambda d: click.echo(f"removed {d['removed']} entries and {len(d['indexes'])} index files"))
