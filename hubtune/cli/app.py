"""The ``hubtune`` command line: parse, call the public API, print a table or ``--json``.

Human output is a table on stdout; ``--json`` prints one JSON document on stdout; logs, warnings
and progress go to stderr. Heavy libraries are imported inside commands, so ``hubtune --help``
stays instant. Plugins may add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from hubtune import __version__
from hubtune.cli.bench import bench
from hubtune.cli.compare import compare
from hubtune.cli.demo import demo
from hubtune.cli.finetune import export_model, finetune
from hubtune.cli.heads import evaluate, predict, train
from hubtune.cli.models import info, models, pull, sources
from hubtune.cli.search import index_group, search
from hubtune.cli.serve import serve
from hubtune.cli.scale import index_build_sharded, merge
from hubtune.cli.store import cache, export, extract
from hubtune.errors import HubtuneError, cli_caller

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
            with cli_caller():  # messages name options as --flags
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


# the commands, one module per group beside this one
for command in (sources, models, pull, info, demo, extract, export, cache, index_group, search, train, evaluate,
                predict, bench, merge, finetune, export_model, compare, serve):
    cli.add_command(command)
index_group.add_command(index_build_sharded)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    cli.main(args=argv, prog_name="hubtune")
