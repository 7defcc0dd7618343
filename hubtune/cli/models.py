"""CLI commands about models and their sources: ``sources``, ``models``, ``pull``, ``info``."""

from __future__ import annotations

import json
from typing import Any

import click

from hubtune.cli.common import emit, json_option, model_options, print_table


@click.command()
@json_option
def sources(as_json: bool) -> None:
    """List the installed source plugins."""
    from hubtune.registry import get_sources

    rows = [{"name": e.name, "plugin": e.plugin, "version": e.version} for e in get_sources().values()]
    emit(rows, as_json, lambda data: print_table(data, ["name", "plugin", "version"], "sources"))


@click.command()
@click.argument("pattern", required=False)
@click.option("--source", "source_name", default=None, help="Only this source (hf, timm, torchvision, ...).")
@click.option("--remote", is_flag=True, help="Search the Hugging Face Hub (most downloaded first) instead of "
              "listing what the sources offer locally.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="With --remote: at most this many models.")
@click.option("--offline", is_flag=True, help="Make no network request (also HF_HUB_OFFLINE=1); refuses --remote.")
@json_option
def models(pattern: str | None, source_name: str | None, remote: bool, limit: int, offline: bool,
           as_json: bool) -> None:
    """List models the sources offer, optionally filtered by a shell PATTERN (e.g. 'resnet*').

    With --remote, search the Hugging Face Hub for PATTERN instead: name, task, library and downloads.
    """
    from hubtune.refs import HUB_SOURCE
    from hubtune.registry import get_source, get_sources

    prefix, _, rest = (pattern or "").partition(":")
    if rest and prefix in get_sources():  # 'timm:resnet*' means --source timm 'resnet*', for every source alike
        if source_name not in (None, prefix):
            raise click.UsageError(f"the pattern {pattern!r} names the source {prefix!r} but --source is {source_name!r}")
        source_name, pattern = prefix, rest
    if remote:
        if source_name not in (None, HUB_SOURCE):
            raise click.UsageError(f"--remote searches the Hugging Face Hub (source {HUB_SOURCE!r}), not "
                                   f"{source_name!r}; drop --source or --remote")
        _remote_models(pattern, limit, offline, as_json)
        return
    names = [source_name] if source_name else list(get_sources())
    rows = []
    for name in names:
        for info in get_source(name).list_models(pattern):
            rows.append({"ref": info.ref, "source": info.source, "modality": info.modality})
    emit(rows, as_json, lambda data: print_table(data, ["ref", "source", "modality"], f"{len(data)} models"))


def _remote_models(pattern: str | None, limit: int, offline: bool, as_json: bool) -> None:
    from hubtune.errors import OfflineError
    from hubtune.hubsearch import search_hub

    if offline:
        raise OfflineError("--remote searches the Hugging Face Hub and --offline forbids the network; drop one of "
                           "them (without --remote, `hubtune models` lists the models in the local caches)")
    rows = search_hub(pattern, limit=limit)
    title = f"{len(rows)} models on the Hub" + (f" matching {pattern!r}" if pattern else "") + ", most downloaded first"
    emit(rows, as_json, lambda data: print_table(data, ["ref", "task", "library", "downloads", "modality"], title))


@click.command()
@click.argument("ref")
@model_options
@json_option
def pull(ref: str, options: Any, as_json: bool) -> None:
    """Fetch REF's weights into the local hub cache; with --offline, confirm they are there."""
    from hubtune.api import pull as pull_model

    result = pull_model(ref, options)
    row = {"ref": result.ref, "revision": result.revision, "path": result.path}
    emit(row, as_json, lambda data: print_table([data], ["ref", "revision", "path"]))


@click.command()
@click.argument("ref")
@model_options
@json_option
def info(ref: str, options: Any, as_json: bool) -> None:
    """Show what a backbone is: modality, dim, revision, fingerprint, layers, preprocessing."""
    from hubtune.api import load_backbone

    data = load_backbone(ref, options).describe()

    def table(d: dict) -> None:
        rows = [{"field": k, "value": json.dumps(v) if isinstance(v, (dict, list)) else v} for k, v in d.items()]
        print_table(rows, ["field", "value"], d["ref"])

    emit(data, as_json, table)
