"""The plugin system in-process: a fake source registered by hand, reference resolution, the
allow-list, failure reporting, and the guide covering every hook."""

from __future__ import annotations

import inspect
import logging
import re
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, Callable

import pytest

from hubtune import constants, hookspecs, plugins
from hubtune.backbone import Backbone, ImagePreprocessor, LoadOptions
from hubtune.errors import AmbiguousModelError, ModelNotFoundError, PluginError, UnknownSourceError
from hubtune.hookspecs import hookimpl
from hubtune.refs import ModelRef
from hubtune.registry import get_sources, resolve_ref
from hubtune.sources import Source

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FAKE_DIM = 8


def _to_tensor(image: Any) -> Any:
    """PIL RGB image -> (3, 16, 16) float tensor in [0, 1] (top-level: picklable)."""
    import numpy as np
    import torch

    array = np.asarray(image.resize((16, 16)), dtype=np.float32) / 255.0  # (16, 16, 3)
    return torch.from_numpy(array).permute(2, 0, 1)


class FakeBackbone(Backbone):
    def pools(self, layer: str) -> Any:
        from hubtune.plugin import FEATURE_MAP

        return FEATURE_MAP

    def forward(self, batch: dict) -> Any:
        return self.model(batch["pixel_values"]).mean((2, 3))  # (B, 3, 16, 16) -> (B, FAKE_DIM)


class FakeSource(Source):
    name = "fake"
    modalities = ("image",)

    def claims(self, name: str) -> bool:
        return name == "fake-only-net"

    def load(self, ref: ModelRef, options: LoadOptions) -> Backbone:
        import torch

        weights = options.parsed_weights
        torch.manual_seed(weights.seed)
        return FakeBackbone(
            ref=ref, revision=None, model=torch.nn.Conv2d(3, FAKE_DIM, 1),
            preprocessor=ImagePreprocessor(_to_tensor), preprocess_config={"size": [16, 16]},
            layers=["conv"], options=options,
        )


class FakePlugin:
    """A plugin object (not a module): hookimpl methods work the same."""

    __version__ = "9.9.9"

    def __init__(self, source_name: str = "fake"):
        self.source_name = source_name

    @hookimpl
    def register_sources(self, register: Callable[[Source], None]) -> None:
        source = FakeSource()
        source.name = self.source_name  # instance attribute shadows the ClassVar
        register(source)


class AliasPlugin:
    def __init__(self, aliases: dict[str, str]):
        self.aliases = aliases
        self.asked: list[tuple[str, list[str]]] = []

    @hookimpl
    def resolve_model_name(self, name: str, sources: list[str]) -> str | None:
        self.asked.append((name, list(sources)))
        return self.aliases.get(name)


@pytest.fixture
def fake_plugin():
    plugins.register_plugin(FakePlugin(), name="fakeplugin")
    yield "fakeplugin"
    plugins.unregister_plugin("fakeplugin")


@pytest.fixture
def register():
    """Register extra plugin objects for one test; all are unregistered after it."""
    names: list[str] = []

    def add(plugin: object, name: str) -> None:
        plugins.register_plugin(plugin, name=name)
        names.append(name)

    yield add
    for name in reversed(names):
        plugins.unregister_plugin(name)


# -- (a) registration ---------------------------------------------------------------------------------
def test_fake_source_is_listed_with_its_plugin(fake_plugin: str) -> None:
    sources = get_sources()
    assert {"hf", "timm", "torchvision", "fake"} <= set(sources)
    entry = sources["fake"]
    assert entry.plugin == fake_plugin and entry.version == "9.9.9"
    assert isinstance(entry.source, FakeSource)
    assert list(sources) == sorted(sources)


def test_unregistering_removes_the_source() -> None:
    plugins.register_plugin(FakePlugin(), name="fakeplugin")
    assert "fake" in get_sources()
    plugins.unregister_plugin("fakeplugin")
    assert "fake" not in get_sources()


# -- (b) duplicate source names -----------------------------------------------------------------------
def test_duplicate_source_name_is_an_error_naming_both_plugins(fake_plugin: str, register) -> None:
    register(FakePlugin(), name="otherplugin")
    with pytest.raises(PluginError) as info:
        get_sources()
    message = str(info.value)
    assert "'fake'" in message and f"'{fake_plugin}'" in message and "'otherplugin'" in message
    assert "HUBTUNE_LOAD_PLUGINS" in message


def test_duplicate_of_a_built_in_source_is_an_error(register) -> None:
    register(FakePlugin("timm"), name="impostor")
    with pytest.raises(PluginError, match=r"'timm'.*'impostor'|'impostor'.*'timm'"):
        get_sources()


def test_registering_something_that_is_not_a_source_is_an_error(register) -> None:
    class Bad:
        @hookimpl
        def register_sources(self, register: Callable) -> None:
            register("not a source")

    register(Bad(), name="bad")
    with pytest.raises(PluginError, match="'bad'.*expected a hubtune.Source"):
        get_sources()


# -- (c) resolution -----------------------------------------------------------------------------------
def test_explicit_prefix(fake_plugin: str) -> None:
    assert resolve_ref("fake:anything") == ModelRef("fake", "anything")
    assert resolve_ref("timm:resnet18@main") == ModelRef("timm", "resnet18", "main")
    assert resolve_ref(ModelRef("fake", "x")) == ModelRef("fake", "x")


def test_unknown_prefix_lists_the_installed_sources(fake_plugin: str) -> None:
    with pytest.raises(UnknownSourceError) as info:
        resolve_ref("nosuch:model")
    message = str(info.value)
    assert "'nosuch'" in message
    for name in ("fake", "hf", "timm", "torchvision"):
        assert name in message
    assert info.value.exit_code == 2


def test_bare_owner_name_goes_to_hf(fake_plugin: str) -> None:
    assert resolve_ref("someone/some-model") == ModelRef("hf", "someone/some-model")
    assert resolve_ref("someone/some-model@v1.0") == ModelRef("hf", "someone/some-model", "v1.0")


def test_bare_name_claimed_by_two_sources_is_ambiguous(fake_plugin: str) -> None:
    with pytest.raises(AmbiguousModelError) as info:
        resolve_ref("resnet18")
    assert sorted(info.value.candidates) == ["timm:resnet18", "torchvision:resnet18"]
    assert "timm:resnet18" in str(info.value) and "torchvision:resnet18" in str(info.value)


def test_bare_name_claimed_by_one_source(fake_plugin: str) -> None:
    assert resolve_ref("fake-only-net") == ModelRef("fake", "fake-only-net")
    assert resolve_ref("fake-only-net@r1") == ModelRef("fake", "fake-only-net", "r1")
    assert resolve_ref("test_resnet") == ModelRef("timm", "test_resnet")  # timm's test model only


def test_bare_name_nobody_claims(fake_plugin: str) -> None:
    with pytest.raises(ModelNotFoundError, match="no_such_model_xyz"):
        resolve_ref("no_such_model_xyz")


def test_resolve_model_name_alias_wins(fake_plugin: str, register) -> None:
    decliner = AliasPlugin({})
    alias = AliasPlugin({"resnet18": "fake:aliased", "myalias": "timm:resnet18"})
    register(alias, name="alias")
    register(decliner, name="decliner")  # registered last, so asked first (pluggy calls LIFO)
    assert resolve_ref("resnet18") == ModelRef("fake", "aliased")  # beats two sources' claims
    assert resolve_ref("myalias@v2") == ModelRef("timm", "resnet18", "v2")  # the user's revision is kept
    assert resolve_ref("fake-only-net") == ModelRef("fake", "fake-only-net")  # None: claims() decide
    asked_name, asked_sources = decliner.asked[0]
    assert asked_name == "resnet18" and {"fake", "hf", "timm", "torchvision"} <= set(asked_sources)
    # not consulted for prefixed references or owner/name
    count = len(alias.asked)
    resolve_ref("timm:resnet18")
    resolve_ref("owner/resnet18")
    assert len(alias.asked) == count


def test_resolve_model_name_first_answer_wins(register) -> None:
    register(AliasPlugin({"x": "timm:resnet18"}), name="first")
    register(AliasPlugin({"x": "torchvision:resnet18"}), name="second")
    answer = resolve_ref("x")
    assert answer in (ModelRef("timm", "resnet18"), ModelRef("torchvision", "resnet18"))
    assert plugins.get_plugin_manager().hook.resolve_model_name.spec.opts["firstresult"] is True


def test_resolve_model_name_bad_answers(register) -> None:
    register(AliasPlugin({"noprefix": "resnet18", "unknown": "nosuch:model"}), name="alias")
    with pytest.raises(PluginError, match="source prefix"):
        resolve_ref("noprefix")
    with pytest.raises(UnknownSourceError, match="nosuch"):
        resolve_ref("unknown")


# -- (d) the guide documents every hook ---------------------------------------------------------------
def _hooks() -> dict[str, Callable]:
    return {
        name: obj for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and hasattr(obj, f"{constants.ENTRY_POINT_GROUP}_spec")
    }


def test_every_hook_is_documented_in_the_guide() -> None:
    hooks = _hooks()
    assert {"register_sources", "resolve_model_name", "register_commands"} <= set(hooks)
    text = GUIDE.read_text()
    missing = [name for name in hooks if name not in text]
    assert not missing, f"docs/plugins.md does not mention these hooks: {missing}"
    for name, hook in hooks.items():
        params = list(inspect.signature(hook).parameters)
        signature = re.search(rf"def {name}\(([^)]*(?:\([^)]*\))?[^)]*)\)", text)
        assert signature, f"docs/plugins.md shows no signature `def {name}(...)`"
        assert re.findall(r"(\w+):", signature.group(1)) == params, (name, signature.group(0))


# -- (e) HUBTUNE_LOAD_PLUGINS -------------------------------------------------------------------------
def test_allow_list_loads_only_the_named_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUBTUNE_LOAD_PLUGINS", "timm")
    plugins.reset()
    assert list(get_sources()) == ["timm"]
    assert plugins.plugin_info("hf") is None
    monkeypatch.setenv("HUBTUNE_LOAD_PLUGINS", " timm, torchvision ,")
    plugins.reset()
    assert list(get_sources()) == ["timm", "torchvision"]
    monkeypatch.setenv("HUBTUNE_LOAD_PLUGINS", "")
    plugins.reset()
    assert get_sources() == {}
    with pytest.raises(UnknownSourceError, match="none"):
        resolve_ref("timm:resnet18")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _sources_with_extra_entry_points(monkeypatch: pytest.MonkeyPatch, *extra: EntryPoint) -> list[str]:
    """Load the installed plugins plus ``extra``; return the warnings logged meanwhile."""
    real = plugins.entry_points
    monkeypatch.setattr(plugins, "entry_points", lambda group: [*real(group=group), *extra])
    plugins.reset()
    records = _Records()  # on the hubtune logger itself: the CLI turns its propagation off
    logger = logging.getLogger("hubtune")
    logger.addHandler(records)
    try:
        assert {"hf", "timm", "torchvision"} <= set(get_sources())
    finally:
        logger.removeHandler(records)
    return records.messages


def test_a_plugin_failing_to_import_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = EntryPoint(name="broken", value="hubtune_no_such_module_xyz", group=constants.ENTRY_POINT_GROUP)
    messages = _sources_with_extra_entry_points(monkeypatch, broken)
    assert "broken" not in get_sources()
    assert any("'broken'" in message and "ModuleNotFoundError" in message for message in messages)
    (failure,) = plugins.plugin_failures()
    assert failure.name == "broken" and failure.value == "hubtune_no_such_module_xyz"


def _module_plugin(monkeypatch: pytest.MonkeyPatch, name: str, **functions) -> EntryPoint:
    """An importable module holding ``functions`` (hook implementations), as an entry point."""
    import sys
    import types

    from hubtune.hookspecs import hookimpl

    module = types.ModuleType(name)
    for function_name, function in functions.items():
        setattr(module, function_name, hookimpl(function))
    monkeypatch.setitem(sys.modules, name, module)
    return EntryPoint(name=name, value=name, group=constants.ENTRY_POINT_GROUP)


def test_plugins_broken_after_import_are_skipped_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def register_datasets(register):  # no such hook
        pass

    def register_sources(register):
        raise ImportError("optional dependency missing")

    unknown_hook = _module_plugin(monkeypatch, "hubtune_unknown_hook_xyz", register_datasets=register_datasets)
    raising = _module_plugin(monkeypatch, "hubtune_raising_xyz", register_sources=register_sources)
    messages = _sources_with_extra_entry_points(monkeypatch, unknown_hook, raising)
    failed = {failure.name for failure in plugins.plugin_failures()}
    assert failed == {"hubtune_unknown_hook_xyz", "hubtune_raising_xyz"}
    assert plugins.get_plugin_manager().get_plugin("hubtune_unknown_hook_xyz") is None
    assert any("register_datasets" in m for m in messages)
    assert any("optional dependency missing" in m for m in messages)


# -- (f) loading a backbone through the public API ------------------------------------------------------
def test_load_backbone_from_the_fake_source(fake_plugin: str, rgb_images: list[bytes]) -> None:
    from hubtune.api import load_backbone

    backbone = load_backbone("fake:anything", weights="random")
    vectors = backbone.embed(rgb_images)
    assert vectors.shape == (len(rgb_images), backbone.dim) and backbone.dim == FAKE_DIM
    assert vectors.dtype.name == "float32"
    assert backbone.ref == ModelRef("fake", "anything") and backbone.weights == "random:0"
    again = load_backbone("fake-only-net", weights="random").embed(rgb_images)
    assert (again == vectors).all()  # same seed, same function
    assert load_backbone("fake:anything", weights="random:1").fingerprint() != backbone.fingerprint()


# -- (g) plugin commands ----------------------------------------------------------------------------------
class CommandPlugin:
    def __init__(self, fail: bool = False):
        self.fail = fail

    @hookimpl
    def register_commands(self, cli: Any) -> None:
        import click

        if self.fail:
            raise RuntimeError("boom in register_commands")

        @click.command("extract")
        def hijack() -> None:
            """Not the real extract."""
            click.echo("hijacked")

        @click.command("fakeplugin-hello")
        def hello() -> None:
            click.echo("hello from the plugin")

        cli.add_command(hijack)
        cli.add_command(hello)


def _cli_run(*args: str) -> Any:
    from click.testing import CliRunner

    from hubtune import cli as cli_module

    cli_module.cli._plugins_loaded = False  # the group loads plugin commands once per process
    try:
        return CliRunner().invoke(cli_module.cli, list(args))
    finally:
        cli_module.cli._plugins_loaded = False


@pytest.fixture
def warnings_logged():
    """Messages the ``hubtune`` logger emits during the test (it does not propagate to caplog)."""
    import logging

    class Records(logging.Handler):
        messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    handler = Records()
    handler.messages = []
    logging.getLogger("hubtune").addHandler(handler)
    yield handler.messages
    logging.getLogger("hubtune").removeHandler(handler)


def test_a_plugin_whose_register_commands_raises_is_skipped_and_help_still_works(
        register, warnings_logged: list[str]) -> None:
    register(CommandPlugin(fail=True), name="brokencmds")
    result = _cli_run("--help")
    assert result.exit_code == 0 and "extract" in result.output
    assert any("brokencmds" in m and "boom in register_commands" in m for m in warnings_logged)
    assert any(f.name == "brokencmds" for f in plugins.plugin_failures())


def test_a_plugin_cannot_replace_a_built_in_command(register, warnings_logged: list[str]) -> None:
    register(CommandPlugin(), name="hijacker")
    result = _cli_run("extract", "--help")
    assert result.exit_code == 0 and "hijacked" not in result.output and "DATA" in result.output
    assert _cli_run("fakeplugin-hello").output.strip() == "hello from the plugin"
    assert any("hijacker" in m and "'extract'" in m for m in warnings_logged)
