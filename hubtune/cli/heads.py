"""CLI command ``train``: fit a head on a dataset's cached vectors."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from hubtune.cli.common import cache_option, emit, json_option, model_options, print_table, resolve_cache


def _positive(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """A finite number above zero (click's FloatRange lets nan through, and C <= 0 fits nothing)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"{value}; expected a finite number above 0")
    return value


@click.command()
@cache_option
@click.option("--model", "ref", required=True, help="The model reference extract was given.")
@click.option("--dataset", "dataset_name", required=True)
@click.option("--head", "kind", type=click.Choice(["linear", "mlp", "knn", "zeroshot"]), required=True,
              help="linear: logistic regression, C chosen on validation; mlp: one hidden layer; knn: DINO's weighted "
              "vote; zeroshot: no training, the class names embedded by a text-image model's text tower (CLIP, SigLIP).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder for the head.")
@click.option("--normalise", type=click.Choice(["none", "l2", "standardise"]), default=None,
              help="Feature normalisation (default: standardise for linear/mlp, l2 for knn).")
@click.option("--balanced", is_flag=True, help="Weight classes inversely to their frequency.")
@click.option("--C", "c_value", type=float, default=None, callback=_positive, help="linear: fix C instead of searching 10^-6..10^5.")
@click.option("--k", type=click.IntRange(min=1), default=20, show_default=True, help="knn: neighbours.")
@click.option("--temperature", type=float, callback=_positive, default=0.07, show_default=True, help="knn: vote temperature.")
@click.option("--hidden", type=click.IntRange(min=1), default=512, show_default=True, help="mlp: hidden width.")
@click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True, help="mlp: most epochs.")
@click.option("--template", "templates", multiple=True, metavar="TEXT",
              help="zeroshot: a prompt template with {} for the class name (repeatable; default: the model "
              "family's published set, e.g. CLIP's 80 ImageNet templates).")
@model_options
@json_option
def train(cache_dir: Path | None, ref: str, dataset_name: str, kind: str, out: Path, normalise: str | None,
          balanced: bool, c_value: float | None, k: int, temperature: float, hidden: int, epochs: int,
          templates: tuple[str, ...], options: Any, as_json: bool) -> None:
    """Fit a head on cached vectors (never re-running the backbone) and save it to OUT.

    `--head zeroshot` fits nothing: its classes are the dataset's labels, embedded through the text tower
    of the model that made the vectors; its val_accuracy is its score on every labelled item."""
    from hubtune.heads.fit import train_head, train_report

    if templates and kind != "zeroshot":
        raise click.UsageError("--template applies to --head zeroshot only")
    head = train_head(resolve_cache(cache_dir), ref, dataset_name, kind, out=out, normalise=normalise,
                      balanced=balanced, C=c_value, k=k, temperature=temperature, hidden=hidden, epochs=epochs,
                      templates=templates, options=options)
    emit(train_report(head, out), as_json, lambda d: print_table([d], ["head", "val_accuracy", "balanced_accuracy",
                                                                        "majority_baseline", "path"]))


@click.command("eval")
@click.argument("head_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@cache_option
@json_option
def evaluate(head_dir: Path, data: Path, cache_dir: Path | None, as_json: bool) -> None:
    """Score the head in HEAD_DIR on labelled DATA (embedded through the cache with the head's backbone;
    a fine-tuned head runs its frozen prefix through the cache, then its trained top)."""
    from hubtune.heads.use import load_head

    report = load_head(head_dir, resolve_cache(cache_dir)).evaluate(data)
    emit(report, as_json, lambda d: print_table([d], ["n", "accuracy", "balanced_accuracy", "top5", "skipped"]))


@click.command()
@click.argument("head_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", nargs=-1, required=True)
@cache_option
@json_option
def predict(head_dir: Path, inputs: tuple[str, ...], cache_dir: Path | None, as_json: bool) -> None:
    """Classify INPUTS (texts, or image paths for an image head) with the head in HEAD_DIR."""
    from hubtune.heads.use import load_head
    from hubtune.heads.use import predict as run

    cache = resolve_cache(cache_dir)
    rows = run(load_head(head_dir, cache), list(inputs), cache)
    emit(rows, as_json, lambda d: print_table(d, ["input", "label", "score"]))
