"""Pieces every hubtune command shares: output (table or ``--json``) and the shared options."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable

import click

from hubtune.pooling import NATIVE, POOLS
from hubtune.options import TOWERS
from hubtune.runtime import PRECISIONS


def emit(data: Any, as_json: bool, table: Callable[[Any], None]) -> None:
    """Print ``data`` as JSON (one document on stdout) or through ``table``."""
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))
    else:
        table(data)


def print_table(rows: list[dict], columns: list[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.measure import Measurement
    from rich.table import Table

    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")  # a narrow terminal folds a model name, never cuts it
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    console = Console()
    if not console.is_terminal:  # a pipe or a file gets the whole table on one line per row, not 80 columns
        console = Console(width=max(console.width, Measurement.get(console, console.options.update(max_width=1000), table).maximum))
    console.print(table)


def json_option(func: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")(func)


def model_options(func: Callable | None = None, *, precision: bool = True) -> Callable:
    """The options that, with the model reference, decide a backbone (and so its fingerprint).

    ``precision=False`` leaves ``--precision`` to the command (``bench`` takes a list).
    """
    if func is None:
        return functools.partial(model_options, precision=precision)
    options = [
        click.option("--layer", default=None, help="Layer to embed from (default: the model's embedding layer; "
                     "`hubtune info REF` lists them)."),
        click.option("--pool", default=None, metavar="NAME",
                     help=f"How a layer's output becomes one vector: {', '.join(POOLS)} or {NATIVE} (the model's "
                     "own), plus a model's own (cls+mean, lasttoken, weightedmean, ...), as the layer accepts (default: the layer's own; `hubtune info REF --layer L` lists them)."),
        *([click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                        help="Compute precision; auto = bf16 where the device runs it fast, else fp32.")]
          if precision else []),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--weights", default="default", show_default=True,
                     help="default (pretrained), random[:SEED] (seeded init, no download) or PATH to a "
                     ".safetensors state dict."),
        click.option("--offline", is_flag=True, help="Use only the local caches; make no network request "
                     "(also HF_HUB_OFFLINE=1)."),
        click.option("--trust-remote-code", is_flag=True,
                     help="Allow a Hub repository's own Python code; needs REF@<40-hex commit>."),
        click.option("--prompt", default=None, metavar="NAME",
                     help="Text models: put the model's prompt NAME before every input (`hubtune info REF` lists "
                     "them; default: the model's default prompt, if it declares one)."),
        click.option("--prompt-text", default=None, metavar="TEXT",
                     help="Text models: put TEXT before every input ('' for none, even over a default prompt)."),
        click.option("--dim", type=click.IntRange(min=1), default=None, metavar="N",
                     help="Keep the first N dimensions of each vector (Matryoshka models; vectors already "
                     "cached at full size are reused)."),
        click.option("--tower", type=click.Choice(TOWERS), default=None,
                     help="Two-tower models (CLIP, SigLIP): the tower to embed with (default: the data's kind)."),
    ]
    for option in reversed(options):
        func = option(func)

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from hubtune.backbone import LoadOptions

        kwargs["options"] = LoadOptions(
            layer=kwargs.pop("layer"), pool=kwargs.pop("pool"), precision=kwargs.pop("precision") if precision else "auto",
            device=kwargs.pop("device"), weights=kwargs.pop("weights"), offline=kwargs.pop("offline"),
            trust_remote_code=kwargs.pop("trust_remote_code"), prompt=kwargs.pop("prompt"),
            prompt_text=kwargs.pop("prompt_text"), dim=kwargs.pop("dim"), tower=kwargs.pop("tower"),
        )
        return func(*args, **kwargs)

    return wrapper


def cache_option(func: Callable) -> Callable:
    from hubtune.constants import default_cache_dir

    return click.option(
        "--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help=f"Embedding store folder (default: {default_cache_dir()}, under HUBTUNE_HOME).",
    )(func)


def resolve_cache(cache_dir: Path | None) -> Path:
    from hubtune.constants import default_cache_dir

    return cache_dir or default_cache_dir()


def resolve_workers(value: str, modality: str) -> int:
    """``--workers``: a whole number, or ``auto`` (:func:`hubtune.cache.workers_for` decides)."""
    from hubtune.cache import workers_for

    if value != "auto" and not value.isdigit():
        raise click.BadParameter(f"{value!r}; expected auto or a whole number", param_hint="--workers")
    return workers_for(value if value == "auto" else int(value), modality)
