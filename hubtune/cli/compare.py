"""CLI command ``compare``: rank backbones for a labelled dataset (a thin layer over :func:`hubtune.compare`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubtune.cli.common import cache_option, emit, json_option, model_options, print_table, resolve_cache, resolve_workers

#: the table's columns: (header, row field)
COLUMNS = [("#", "rank"), ("pareto", "pareto"), ("model", "ref"), ("linear", "linear_accuracy"), ("knn", "knn_accuracy"),
           ("items/s", "items_per_s"), ("from", "throughput_from"), ("dim", "dim"), ("params_m", "params_m")]


@click.command()
@click.argument("refs", nargs=-1, required=True, metavar="REF...")
@click.option("--data", type=click.Path(exists=True, path_type=Path), required=True,
              help="The labelled dataset (as extract takes it); scored on its test split, else on a hold-out.")
@cache_option
@click.option("--dataset", "dataset_name", default=None, help="Name to record DATA under (default: its file or folder name).")
@click.option("--batch-size", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--workers", default="auto", show_default=True,
              help="DataLoader worker processes for reading/decoding (auto: 0 for text, half the CPUs for images).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the hold-out, when DATA has no test split.")
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.2, show_default=True,
              help="Fraction of each class held out for scoring, when DATA has no test split.")
@click.option("--timed-items", type=click.IntRange(min=1), default=32, show_default=True,
              help="Items a short timed pass embeds (into a scratch store) when a model's vectors were already cached.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write linear accuracy vs items/s, with the Pareto front, to this .png (or .pdf, .svg, .jpg, "
              ".webp, .gif, .tif, .eps, .ps); its folder is made and checked before any model runs.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="A progress bar per model on stderr.")
@model_options
@json_option
def compare(refs: tuple[str, ...], data: Path, cache_dir: Path | None, dataset_name: str | None, batch_size: int,
            workers: str, seed: int, holdout: float, timed_items: int, plot_path: Path | None, progress: bool,
            options: Any, as_json: bool) -> None:
    """Rank the backbones REF... on the labelled dataset DATA.

    Each model extracts DATA through the cache (cached vectors are reused), then the kNN head and the
    linear probe are fitted exactly as `hubtune train --head knn|linear` fits them and scored as
    `hubtune eval` scores: on DATA's test split, or without one on a stratified --holdout of each class
    (seeded; the same items for every model; the rest is the training data). Rows are sorted by linear
    accuracy, then kNN; `*` marks the Pareto front of linear accuracy vs items/s (this machine). A
    model that fails keeps its row, with the error; the exit code is non-zero only if all fail.
    """
    from hubtune.compare import check_plot_path
    from hubtune.compare import compare as run
    from hubtune.data import open_dataset
    from hubtune.errors import CompareError, PlotError

    if plot_path is not None:
        try:
            check_plot_path(plot_path)
        except PlotError as exc:
            raise click.BadParameter(str(exc), param_hint="--plot") from None
    dataset = open_dataset(data)
    rows = run(list(refs), dataset, cache=resolve_cache(cache_dir), options=options, dataset_name=dataset_name,
               batch_size=batch_size, workers=resolve_workers(workers, dataset.modality), seed=seed, holdout=holdout,
               timed_items=timed_items, progress=progress)
    scored = "its test split" if any(row["evaluated_on"] == "test" for row in rows) else \
        f"a {holdout:.0%} hold-out (seed {seed})"
    emit(rows, as_json, lambda d: _table(d, f"{len(d)} model{'s' * (len(d) != 1)} on {data}, scored on {scored}; "
                                         "* = Pareto front (linear accuracy vs items/s)"))
    if plot_path is not None:  # after the rows are out: a plot that fails to write loses nothing else
        _plot(rows, plot_path)
    if all(row["error"] for row in rows):
        raise CompareError(f"all {len(rows)} models failed; see the error column")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    from hubtune.compare import plot, plottable

    if plottable(rows):
        click.echo(f"plot written to {plot(rows, path)}", err=True)
    else:
        click.echo(f"no plot written to {path}: every model failed, so there is no accuracy to draw", err=True)


def _table(rows: list[dict[str, Any]], title: str) -> None:
    """The ranking, then one line per failed model with its error (too long for a column)."""
    def accuracy(value: float | None) -> str | None:
        return None if value is None else f"{value:.4f}"

    shown = [{header: {**row, "rank": number, "pareto": "*" if row["pareto"] else "",
                       "linear_accuracy": accuracy(row["linear_accuracy"]), "knn_accuracy": accuracy(row["knn_accuracy"]),
                       "throughput_from": row["throughput_from"] or ("failed" if row["error"] else None)}[field]
              for header, field in COLUMNS} for number, row in enumerate(rows, 1)]
    print_table(shown, [header for header, _ in COLUMNS], title)
    for row in rows:
        if row["error"]:
            click.echo(f"failed: {row['ref']}: {row['error']}")
