"""The hooks a hubtune plugin may implement.

A plugin is a module (or object) registered under the entry-point group ``hubtune``; it implements
any of the hooks below with ``@hubtune.hookimpl``. ``docs/plugins.md`` documents each one with an
example, and a test fails when a hook here is missing from that guide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import pluggy

if TYPE_CHECKING:  # no import cost at runtime
    import click

    from hubtune.sources import Source

hookspec = pluggy.HookspecMarker("hubtune")
hookimpl = pluggy.HookimplMarker("hubtune")


@hookspec
def register_sources(register: Callable[["Source"], None]) -> None:
    """Register the model sources this plugin provides.

    Called once per process, the first time hubtune needs the list of sources (``hubtune sources``,
    resolving a model reference, loading a backbone). Call ``register(source)`` once per
    :class:`hubtune.Source` instance. A source's ``name`` is the prefix of its model references
    (``name:model-id``) and must be unique among installed plugins: a duplicate is an error naming
    both plugins. Return nothing.
    """


@hookspec(firstresult=True)
def resolve_model_name(name: str, sources: Sequence[str]) -> str | None:
    """Map a bare model name (no ``source:`` prefix, no ``/``) to a full reference, or decline.

    Called before hubtune asks every source whether it claims ``name``; ``sources`` lists the
    installed source names. Return a reference string such as ``"timm:resnet50.a1_in1k"`` to settle
    the name (it is parsed and validated like user input), or ``None`` to let the next plugin, and
    then the sources' ``claims()``, decide. The first non-None answer wins. Use it for aliases
    ("clip" -> a specific repository), not to guess between sources.
    """


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add click commands to the ``hubtune`` command group.

    Called once when the CLI is built, before arguments are parsed, so it runs on every
    ``hubtune`` invocation, ``--help`` included: keep it cheap and import heavy libraries inside the
    command functions. Add commands with ``cli.add_command(command)``; do not replace built-in ones.
    Return nothing.
    """
