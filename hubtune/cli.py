"""The ``hubtune`` command line: parse, call the public API, print a table or ``--json``.

Human output is a table on stdout; ``--json`` prints one JSON document on stdout; logs, warnings
and progress go to stderr. Heavy libraries are imported inside commands, so ``hubtune --help``
stays instant. Plugins may add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from hubtune import __version__
from hubtune.cli_common import emit, json_option, model_options, print_table
from hubtune.errors import HubtuneError

logger = logging.getLogger("hubtune")


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _setup_logging(verbose: int) -> None:
    if not any(getattr(h, "_hubtune", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_StderrFormatter())
        handler._hubtune = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)


class CLIError(click.ClickException):
    """A :class:`HubtuneError` shown as ``Error: ...`` with the error's own exit code."""

    def __init__(self, error: HubtuneError):
        super().__init__(str(error))
        self.exit_code = error.exit_code


class HubtuneGroup(click.Group):
    """Loads plugin commands on first use and turns hubtune errors into clean CLI errors."""

    _plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        _setup_logging(0)  # plugin warnings print before the group callback sets the level
        from hubtune.plugins import get_plugin_manager, record_failure

        for impl in get_plugin_manager().hook.register_commands.get_hookimpls():
            added = click.Group(impl.plugin_name)  # what this plugin adds, checked before it joins the CLI
            try:
                impl.function(**{name: added for name in impl.argnames})
            except Exception as exc:  # a broken plugin must not take `hubtune --help` down
                record_failure(impl.plugin_name, f"{impl.plugin_name}.register_commands", exc)
                continue
            for name, command in added.commands.items():
                if name in self.commands:
                    logger.warning("plugin %r adds a command %r, which hubtune already has; the plugin's is "
                                   "ignored (prefix plugin commands with the plugin's name)", impl.plugin_name, name)
                    continue
                self.add_command(command, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        self._load_plugin_commands()
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HubtuneError as error:
            raise CLIError(error) from error


@click.group(cls=HubtuneGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hubtune")
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Transfer learning on frozen hub models: embed once, cache, train small heads in seconds.

    \b
    Model references: [source:]id[@revision], e.g.
      hf:sentence-transformers/all-MiniLM-L6-v2   timm:resnet50.a1_in1k
      torchvision:resnet50@IMAGENET1K_V2          timm:hf-hub:timm/vit_small_patch16_224.augreg_in21k
    A bare owner/name goes to hf; a bare name must be claimed by exactly one source.

    \b
    Start with:  hubtune demo            (the whole job on the embedded default model)
                 hubtune sources         (installed model sources)
                 hubtune info REF        (what a backbone is: dim, layers, preprocessing)
    """
    _setup_logging(verbose)


@cli.command()
@json_option
def sources(as_json: bool) -> None:
    """List the installed source plugins."""
    from hubtune.registry import get_sources

    rows = [{"name": e.name, "plugin": e.plugin, "version": e.version} for e in get_sources().values()]
    emit(rows, as_json, lambda data: print_table(data, ["name", "plugin", "version"], "sources"))


@cli.command()
@click.argument("pattern", required=False)
@click.option("--source", "source_name", default=None, help="Only this source (hf, timm, torchvision, ...).")
@json_option
def models(pattern: str | None, source_name: str | None, as_json: bool) -> None:
    """List models the sources offer, optionally filtered by a shell PATTERN (e.g. 'resnet*')."""
    from hubtune.registry import get_source, get_sources

    prefix, _, rest = (pattern or "").partition(":")
    if rest and prefix in get_sources():  # 'timm:resnet*' means --source timm 'resnet*', for every source alike
        if source_name not in (None, prefix):
            raise click.UsageError(f"the pattern {pattern!r} names the source {prefix!r} but --source is {source_name!r}")
        source_name, pattern = prefix, rest
    names = [source_name] if source_name else list(get_sources())
    rows = []
    for name in names:
        for info in get_source(name).list_models(pattern):
            rows.append({"ref": info.ref, "source": info.source, "modality": info.modality})
    emit(rows, as_json, lambda data: print_table(data, ["ref", "source", "modality"], f"{len(data)} models"))


@cli.command()
@click.argument("ref")
@model_options
@json_option
def pull(ref: str, options: Any, as_json: bool) -> None:
    """Fetch REF's weights into the local hub cache; with --offline, confirm they are there."""
    from hubtune.api import pull as pull_model

    result = pull_model(ref, options)
    row = {"ref": result.ref, "revision": result.revision, "path": result.path}
    emit(row, as_json, lambda data: print_table([data], ["ref", "revision", "path"]))


@cli.command()
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


@cli.command()
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


from hubtune.cli_bench import bench  # noqa: E402  (commands defined beside)
from hubtune.cli_finetune import export_model, finetune  # noqa: E402
from hubtune.cli_heads import evaluate, predict, train  # noqa: E402
from hubtune.cli_search import index_group, search  # noqa: E402
from hubtune.cli_scale import index_build_sharded, merge  # noqa: E402
from hubtune.cli_store import cache, export, extract  # noqa: E402

for command in (extract, export, cache, index_group, search, train, evaluate, predict, bench, merge, finetune,
                export_model):
    cli.add_command(command)
index_group.add_command(index_build_sharded)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="hubtune")
