"""CLI command ``demo``: the whole job on the embedded default model, offline."""

from __future__ import annotations

from pathlib import Path

import click

from hubtune.cli.common import emit, json_option, print_table


@click.command()
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Store for the demo's vectors (default: $HUBTUNE_HOME/demo/cache).")
@click.option("--report", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the report (default: $HUBTUNE_HOME/demo/report).")
@click.option("--online", is_flag=True, help="Allow the Hub to be asked for a newer revision (default: offline).")
@json_option
def demo(cache_dir: Path | None, report: Path | None, online: bool, as_json: bool) -> None:
    """The whole job on the embedded default model, offline, in about a minute.

    Embeds the AFINN-165 sentiment word list with sentence-transformers/all-MiniLM-L6-v2, indexes
    it, trains linear and kNN heads, and compares their test accuracy with the majority baseline;
    writes a report folder (confusion matrix, 2-D embedding map, metrics.json).
    """
    from hubtune.demo import run_demo

    result = run_demo(cache_dir, report, offline=not online)

    def table(data: dict) -> None:
        click.echo(f"model   {data['model']}\ndataset AFINN-165: {data['dataset']['items']} words, "
                   f"test split {data['dataset']['test']}, classes {', '.join(data['dataset']['classes'])}")
        rows = [{"head": "majority baseline", "test accuracy": f"{data['majority_baseline']:.3f}"}]
        for kind in ("linear", "knn"):
            rows.append({"head": kind, "test accuracy": f"{data[kind]['accuracy']:.3f}",
                         "balanced": f"{data[kind]['balanced_accuracy']:.3f}", "val accuracy": f"{data[kind]['val_accuracy']:.3f}"})
        print_table(rows, ["head", "test accuracy", "balanced", "val accuracy"], "frozen MiniLM + small heads")
        print_table([{"word": w, "nearest": ", ".join(n[1:])} for w, n in data["neighbours"].items()],
                    ["word", "nearest"], "nearest neighbours (FAISS)")
        click.echo(f"report  {data['report']} ({data['seconds']} s)")

    emit(result, as_json, table)
