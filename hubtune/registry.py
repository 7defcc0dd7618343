"""Installed sources and reference resolution: which source serves a model reference.

Rules (docs/design.md, "The contracts"): an explicit ``source:`` prefix must name an installed source;
a bare ``owner/name`` goes to ``hf``; a bare name is first offered to the ``resolve_model_name`` hook,
then to every source's ``claims()``; when more than one source claims it, the error lists the
prefixed names to choose from. hubtune never guesses.
"""

from __future__ import annotations

from dataclasses import dataclass

from hubtune.errors import AmbiguousModelError, ModelNotFoundError, PluginError, UnknownSourceError
from hubtune.plugins import get_plugin_manager, on_change, plugin_info, record_failure
from hubtune.refs import HF_HUB_PREFIX, HUB_SOURCE, SOURCE_NAME, ModelRef, parse_ref
from hubtune.sources import Source


@dataclass(frozen=True)
class SourceEntry:
    name: str
    source: Source
    plugin: str
    version: str | None


_cache: dict[str, SourceEntry] | None = None


def clear_cache() -> None:
    global _cache
    _cache = None


on_change(clear_cache)  # registering, unregistering or resetting plugins forgets the sources


def get_sources() -> dict[str, SourceEntry]:
    """Every registered source by name; duplicate names are an error naming both plugins."""
    global _cache
    if _cache is not None:
        return _cache
    manager = get_plugin_manager()
    found: dict[str, SourceEntry] = {}
    for impl in manager.hook.register_sources.get_hookimpls():
        plugin_name = impl.plugin_name

        def register(source: Source, _plugin: str = plugin_name) -> None:
            if not isinstance(source, Source) or not SOURCE_NAME.fullmatch(source.name or ""):
                raise PluginError(
                    f"plugin {_plugin!r} registered {source!r}; expected a hubtune.Source instance whose "
                    "name is lower-case letters, digits and '_' (it is the prefix of model references)"
                )
            if source.name in found:
                raise PluginError(
                    f"source {source.name!r} is registered by both plugin {found[source.name].plugin!r} "
                    f"and plugin {_plugin!r}; uninstall one, or choose with "
                    "HUBTUNE_LOAD_PLUGINS=<comma list of plugins>"
                )
            info = plugin_info(_plugin)
            found[source.name] = SourceEntry(source.name, source, _plugin, info.version if info else None)

        try:
            impl.function(**{arg: register for arg in impl.argnames})
        except PluginError:
            raise
        except Exception as exc:  # e.g. a lazily imported dependency that is missing
            record_failure(plugin_name, f"{plugin_name}.register_sources", exc)
    _cache = dict(sorted(found.items()))
    return _cache


def get_source(name: str) -> Source:
    sources = get_sources()
    if name not in sources:
        installed = ", ".join(sources) or "none (see `hubtune sources`)"
        raise UnknownSourceError(
            f"no installed source is called {name!r}; installed sources: {installed}. "
            "Install the plugin that provides it, or check HUBTUNE_LOAD_PLUGINS."
        )
    return sources[name].source


def resolve_ref(ref: str | ModelRef) -> ModelRef:
    """Parse (if needed) and attach the source that serves this reference."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    if parsed.source is not None:
        get_source(parsed.source)
        return parsed
    sources = get_sources()
    if "/" in parsed.id and not parsed.id.startswith(HF_HUB_PREFIX):
        get_source(HUB_SOURCE)
        return parsed.with_source(HUB_SOURCE)
    answer = get_plugin_manager().hook.resolve_model_name(name=parsed.id, sources=list(sources))
    if answer is not None:
        resolved = parse_ref(answer)
        if resolved.source is None:
            raise PluginError(f"resolve_model_name answered {answer!r} for {parsed.id!r}; it must carry a source prefix")
        get_source(resolved.source)
        return resolved if resolved.revision or not parsed.revision else ModelRef(
            resolved.source, resolved.id, parsed.revision
        )
    claimants = [name for name, entry in sources.items() if entry.source.claims(parsed.id)]
    if not claimants:
        raise ModelNotFoundError(
            f"no installed source knows a model called {parsed.id!r}; list them with "
            f"`hubtune models '{parsed.id}*'`, or give a prefix such as timm:{parsed.id}"
        )
    if len(claimants) > 1:
        raise AmbiguousModelError(parsed.id, [str(parsed.with_source(name)) for name in claimants])
    return parsed.with_source(claimants[0])
