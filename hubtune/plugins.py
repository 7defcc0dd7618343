"""The plugin manager: entry-point group ``hubtune``, loaded lazily and once per process.

``HUBTUNE_LOAD_PLUGINS`` (comma list of entry-point names; empty = none) limits what loads. A
plugin that fails to import is reported as a warning naming it, and everything else keeps working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Callable

import pluggy

from hubtune import constants, hookspecs

logger = logging.getLogger("hubtune")


@dataclass(frozen=True)
class PluginFailure:
    name: str
    value: str
    error: str


@dataclass(frozen=True)
class PluginInfo:
    name: str
    module: str
    version: str | None


class _State:
    manager: pluggy.PluginManager | None = None
    failures: list[PluginFailure] = []
    infos: dict[str, PluginInfo] = {}
    listeners: list[Callable[[], None]] = []  # kept across reset(): see on_change


def _new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager("hubtune")
    manager.add_hookspecs(hookspecs)
    return manager


def _load_entry_points(manager: pluggy.PluginManager) -> None:
    allow = constants.plugin_allowlist()
    for ep in entry_points(group=constants.ENTRY_POINT_GROUP):
        if allow is not None and ep.name not in allow:
            continue
        if manager.get_plugin(ep.name) is not None:
            continue  # two distributions declaring the same entry-point name: first one wins
        try:
            plugin = ep.load()
            manager.register(plugin, name=ep.name)
            manager.check_pending()  # unknown hooks or misspelt hook arguments
        except Exception as exc:  # a broken plugin must not take the CLI down
            if manager.get_plugin(ep.name) is not None:
                manager.unregister(name=ep.name)
            record_failure(ep.name, ep.value, exc)
            continue
        version = ep.dist.version if ep.dist is not None else getattr(plugin, "__version__", None)
        _State.infos[ep.name] = PluginInfo(ep.name, ep.value, version)


def record_failure(name: str, value: str, exc: BaseException) -> None:
    """Report a plugin that was skipped: a warning naming it, and a row in :func:`plugin_failures`."""
    _State.failures.append(PluginFailure(name, value, f"{type(exc).__name__}: {exc}"))
    logger.warning("plugin %r (%s) failed to load and was skipped: %s: %s", name, value, type(exc).__name__, exc)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, loading installed plugins on first use."""
    if _State.manager is None:
        manager = _new_manager()
        _State.failures = []
        _State.infos = {}
        _load_entry_points(manager)
        _State.manager = manager
    return _State.manager


def register_plugin(plugin: object, name: str) -> None:
    """Register a plugin object by hand (tests, notebooks); undo with :func:`unregister_plugin`."""
    manager = get_plugin_manager()
    manager.register(plugin, name=name)
    manager.check_pending()
    _State.infos[name] = PluginInfo(name, getattr(plugin, "__name__", type(plugin).__name__),
                                    getattr(plugin, "__version__", None))
    _invalidate_sources()


def unregister_plugin(name: str) -> None:
    manager = get_plugin_manager()
    manager.unregister(name=name)
    _State.infos.pop(name, None)
    _invalidate_sources()


def plugin_info(name: str) -> PluginInfo | None:
    get_plugin_manager()
    return _State.infos.get(name)


def plugin_failures() -> list[PluginFailure]:
    get_plugin_manager()
    return list(_State.failures)


def reset() -> None:
    """Forget every loaded plugin; the next use loads them again (tests use this)."""
    _State.manager = None
    _State.failures = []
    _State.infos = {}
    _invalidate_sources()


def on_change(callback: Callable[[], None]) -> None:
    """Call ``callback`` whenever the registered plugins change (:func:`register_plugin`,
    :func:`unregister_plugin`, :func:`reset`): a cache built from them (the registry's sources)
    clears itself this way, so this module needs no import of it."""
    _State.listeners.append(callback)


def _invalidate_sources() -> None:
    for callback in list(_State.listeners):
        callback()
