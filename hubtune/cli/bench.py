"""CLI command ``bench``: model-only throughput over a grid of batch sizes and precisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubtune.cli.common import emit, json_option, model_options, print_table, resolve_workers


def _list(kind: type, value: str, name: str) -> list:
    try:
        values = [kind(part) for part in value.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or (kind is int and min(values) < 1):
        expected = "positive integers, e.g. 1,8,32" if kind is int else "names, e.g. fp32,bf16"
        raise click.BadParameter(f"{value!r}; expected a comma list of {expected}", param_hint=name)
    return values


def _output_folder(path: Path | None, name: str) -> None:
    """Create an output file's folder before measuring, so minutes of timing are not lost at the end."""
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(f"cannot create the folder for {path}: {exc.strerror}", param_hint=name) from None


@click.command()
@click.argument("ref")
@click.option("--batch-sizes", default="1,32", show_default=True, help="Comma list of batch sizes.")
@click.option("--precision", "precisions", default="fp32", show_default=True, help="Comma list of fp32, bf16, fp16, auto.")
@click.option("--channels-last/--no-channels-last", default=True, show_default=True,
              help="NHWC memory format for convolutional models.")
@click.option("--compile/--no-compile", "compiled", default=False, show_default=True, help="torch.compile the model.")
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--iters", default=10, show_default=True, type=click.IntRange(min=1), help="Timed steps per repeat.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="Real inputs (a dataset folder or table) instead of synthetic ones.")
@click.option("--e2e", is_flag=True, help="With --data: run the real extractor and report its items/s and the share "
              "of time each stage takes (read, decode, preprocess, host-to-device, forward, device-to-host, store "
              "write), at the first --precision and the largest --batch-sizes.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With --e2e: only the first N items of DATA.")
@click.option("--workers", default="auto", show_default=True,
              help="With --e2e: loader worker processes, as for extract (auto: 0 for text, half the CPUs for images).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows as CSV (timm-style columns).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also draw items/s against batch size, one line per precision, to this PNG.")
@model_options(precision=False)
@json_option
def bench(ref: str, batch_sizes: str, precisions: str, channels_last: bool, compiled: bool, warmup: int, iters: int,
          repeats: int, data: Path | None, e2e: bool, limit: int | None, workers: str, csv_path: Path | None,
          plot_path: Path | None, options: Any, as_json: bool) -> None:
    """Items per second of REF's forward pass (model only, inputs already on the device).

    \b
    Examples:
      hubtune bench timm:resnet50 --weights random --batch-sizes 1,8,32 --precision fp32,bf16 --plot rn50.png
      hubtune bench hf:sentence-transformers/all-MiniLM-L6-v2 --e2e --data texts.jsonl --batch-sizes 64

    Each grid point is warmed up, then timed (device-synchronised) over --iters steps, --repeats times;
    the table shows the median step and its spread. --e2e measures the whole extract instead.
    """
    from hubtune.runtime import PRECISIONS

    wanted = _list(str, precisions, "--precision")
    unknown = [p for p in wanted if p not in PRECISIONS]
    if unknown:
        raise click.BadParameter(f"{unknown}; expected some of {', '.join(PRECISIONS)}", param_hint="--precision")
    sizes = _list(int, batch_sizes, "--batch-sizes")
    if e2e:
        if data is None:
            raise click.UsageError("--e2e needs --data DATA: the stage breakdown is of a real extract")
        _bench_e2e(ref, data, max(sizes), wanted[0], workers, limit, compiled, options, as_json)
        return
    from hubtune.bench.grid import plot, run_grid, write_csv

    _output_folder(csv_path, "--csv")
    _output_folder(plot_path, "--plot")
    rows = run_grid(ref, options, sizes, wanted, (channels_last,), (compiled,), warmup, iters, repeats, data=data)
    if csv_path:
        write_csv(rows, csv_path)
    if plot_path:
        plot(rows, plot_path)
    emit([row.as_dict() for row in rows], as_json, lambda d: print_table(
        d, ["batch_size", "precision", "items_per_s", "ms_per_step", "ms_per_step_min", "ms_per_step_max", "gmacs",
            "error"], ref))


def _bench_e2e(ref: str, data: Path, batch_size: int, precision: str, workers: str, limit: int | None,
               compiled: bool, options: Any, as_json: bool) -> None:
    from dataclasses import replace

    from hubtune.api import load_backbone
    from hubtune.bench.e2e import STAGES, run_e2e

    backbone = load_backbone(ref, replace(options, precision=precision))
    if compiled:
        backbone.compile()
    report = run_e2e(backbone, data, batch_size, resolve_workers(workers, backbone.modality), limit, progress=not as_json)

    def table(rows: list[dict]) -> None:
        row = rows[0]
        click.echo(f"{row['model']}: {row['items']} items ({row['failed']} failed), batch {row['batch_size']}, "
                   f"{row['precision']}, {row['workers']} workers: extract {row['items_per_s']:,.1f} items/s "
                   f"(profiled serial pass {row['profiled_items_per_s']:,.1f} items/s)")
        print_table([{"stage": s, "share": f"{row['shares'][s]:.1%}"} for s in STAGES], ["stage", "share"],
                    "share of the profiled pass's wall time")
        click.echo(f"bound by: {row['bound']} ({row['bound_group']} side of the pipeline)")

    emit([report.as_dict()], as_json, table)
