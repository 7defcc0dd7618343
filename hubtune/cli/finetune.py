"""CLI commands ``finetune`` (train the top blocks from cached split-point activations) and
``export-model`` (a fine-tuned head as one plain-torch safetensors checkpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubtune.cli.common import cache_option, emit, json_option, model_options, print_table, resolve_cache


class UnfreezeType(click.ParamType):
    """``auto`` or a whole number of blocks."""

    name = "N|auto"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | str:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if text.isdigit():
            return int(text)
        self.fail(f"{value!r}: expected a whole number of blocks (0 = frozen) or 'auto'", param, ctx)


@click.command()
@click.argument("ref")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option("--unfreeze", type=UnfreezeType(), default="auto", show_default=True,
              help="How many top blocks to train (`hubtune info REF` lists them). auto: 0 under ~20 training "
              "items per class, 2 up to 20k items, more above; it says what it chose and why.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for the result (use it with predict, eval, export-model).")
@cache_option
@click.option("--dataset", "dataset_name", default=None, help="Name of the dataset in the store (default: DATA's name).")
@click.option("--head", "head_kind", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True,
              help="linear: starts from the fitted linear probe (LP-FT); mlp: your own layers (--hidden).")
@click.option("--hidden", default="512", show_default=True, help="mlp: hidden widths, e.g. 512 or 1024,256.")
@click.option("--dropout", type=click.FloatRange(0, 1), default=0.1, show_default=True, help="mlp: dropout.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-4, show_default=True,
              help="Peak learning rate of the head; block i below the top gets lr * layer-decay^i.")
@click.option("--layer-decay", type=click.FloatRange(0, 1), default=0.75, show_default=True,
              help="Layer-wise lr decay (timm's param_groups_layer_decay convention).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=0.05, show_default=True, help="AdamW weight decay.")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True, help="Most epochs.")
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Linear warm-up before the cosine schedule.")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
              help="Stop after this many epochs without a better validation accuracy (the best epoch is kept).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Training batch size.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--activations", type=click.Choice(["cache", "auto", "recompute"]), default="cache", show_default=True,
              help="cache: store the split-point activations once (refused over --max-cache-gb, with the size); "
              "auto: cache when they fit, else recompute; recompute: run the frozen part every epoch.")
@click.option("--max-cache-gb", type=click.FloatRange(min=0), default=8.0, show_default=True,
              help="Most the cached activations may take (they are also read into memory).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="DataLoader workers that decode and preprocess while caching.")
@click.option("--no-progress", is_flag=True, help="No progress bars on stderr.")
@model_options
@json_option
def finetune(ref: str, data: Path, unfreeze: int | str, out: Path, cache_dir: Path | None, dataset_name: str | None,
             head_kind: str, hidden: str, dropout: float, lr: float, layer_decay: float, weight_decay: float,
             epochs: int, warmup_epochs: float, patience: int, batch_size: int, seed: int, activations: str,
             max_cache_gb: float, workers: int, no_progress: bool, options: Any, as_json: bool) -> None:
    """Fine-tune the top blocks of REF on labelled DATA, reading the frozen part from the cache.

    \b
    The frozen part's output at the split point is computed once and stored; each epoch runs only
    the trained blocks and the head. LP-FT: the head starts as the linear probe fitted on the frozen
    features; AdamW with layer-wise lr decay, warm-up + cosine, early stopping on validation (the
    `val` split, else 10 % of train).
    \b
    Example:  hubtune finetune timm:resnet50.a1_in1k photos/ --unfreeze 2 --out resnet-top2
              hubtune predict resnet-top2 cat.jpg
    """
    from hubtune.finetune.head import parse_hidden
    from hubtune.finetune.run import FinetuneConfig
    from hubtune.finetune.run import finetune as run
    from hubtune.finetune.train import TrainConfig

    config = FinetuneConfig(
        unfreeze=unfreeze, head=head_kind, hidden=parse_hidden(hidden), dropout=dropout, activations=activations,
        max_cache_gb=max_cache_gb, workers=workers,
        train=TrainConfig(lr=lr, weight_decay=weight_decay, layer_decay=layer_decay, epochs=epochs,
                          warmup_epochs=warmup_epochs, patience=patience, batch_size=batch_size, seed=seed),
    )
    result = run(ref, data, out, resolve_cache(cache_dir), options=options, config=config, dataset_name=dataset_name,
                 progress=not no_progress, log=lambda message: click.echo(message, err=True))
    emit(result, as_json, lambda d: print_table([d], ["unfrozen", "val_accuracy", "probe_val_accuracy", "best_epoch",
                                                      "activations", "path"]))


@click.command("export-model")
@click.argument("head_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The .safetensors file to write; the plain-torch loader is written beside it.")
@json_option
def export_model(head_dir: Path, out: Path, as_json: bool) -> None:
    """Write a fine-tuned head as one checkpoint usable without hubtune.

    \b
    OUT holds the whole network (frozen and trained blocks) and the head, with what rebuilds it in
    its metadata; hubtune_loader.py beside it needs only torch, safetensors and the model's own
    library (timm, torchvision or transformers):
        from hubtune_loader import load
        model, meta = load("model.safetensors")     # model(pixel_values) -> logits
    """
    from hubtune.finetune.export import export_model as run

    result = run(head_dir, out)
    emit(result, as_json, lambda d: print_table([d], ["path", "loader", "tensors", "classes"]))
