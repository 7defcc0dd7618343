"""CLI command ``bench``: model-only throughput over a grid of batch sizes and precisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubtune.cli_common import emit, json_option, model_options, print_table


def _list(kind: type, value: str, name: str) -> list:
    try:
        return [kind(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}; expected a comma list for {name}") from None


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
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the rows as CSV (timm-style columns).")
@model_options(precision=False)
@json_option
def bench(ref: str, batch_sizes: str, precisions: str, channels_last: bool, compiled: bool, warmup: int, iters: int,
          repeats: int, csv_path: Path | None, options: Any, as_json: bool) -> None:
    """Items per second of REF's forward pass (model only, inputs already on the device)."""
    from hubtune.bench import run_grid, write_csv
    from hubtune.runtime import PRECISIONS

    wanted = _list(str, precisions, "--precision")
    unknown = [p for p in wanted if p not in PRECISIONS]
    if unknown:
        raise click.BadParameter(f"{unknown}; expected some of {', '.join(PRECISIONS)}", param_hint="--precision")
    rows = run_grid(ref, options, _list(int, batch_sizes, "--batch-sizes"), wanted, (channels_last,), (compiled,),
                    warmup, iters, repeats)
    if csv_path:
        write_csv(rows, csv_path)
    data = [row.as_dict() for row in rows]
    emit(data, as_json, lambda d: print_table(d, ["batch_size", "precision", "items_per_s", "ms_per_step",
                                                  "ms_per_step_min", "ms_per_step_max", "gmacs", "error"], ref))
