"""The plugin contract: the core knows no source by name, and ``hubtune.plugin`` is all a plugin imports."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILT_IN = ("hf", "timm", "torchvision")
#: a comparison with, or membership test against, a built-in source or library name
BRANCH = re.compile(r"""(==|!=|\bin\b)\s*[(\[{]?[^#\n]*["'](hf|timm|torchvision|transformers)["']""")


def test_the_core_has_no_branch_on_a_built_in_source_name() -> None:
    offenders = []
    for path in sorted((ROOT / "hubtune").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if BRANCH.search(line) or re.search(r"\bimport hubtune_(hf|timm|torchvision)\b|from hubtune_(hf|timm|torchvision)\b", line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "source-specific code belongs in the source's plugin:\n" + "\n".join(offenders)


def test_the_branch_pattern_catches_what_it_is_for() -> None:
    for line in ['if source == "timm":', 'if meta["library"] == "torchvision":', 'if ref.source in ("hf", "x"):']:
        assert BRANCH.search(line), line
    assert not BRANCH.search('HUB_SOURCE = "hf"')


def test_built_in_plugins_import_only_the_plugin_module_and_hub_helpers() -> None:
    allowed = {"hubtune.plugin", "hubtune.hfhub", "hubtune.refs", "hubtune.hookspecs"}
    offenders = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = re.match(r"\s*from (hubtune(?:\.[\w.]+)?) import", line)
            if match and match.group(1) not in allowed:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "plugins import what they need from hubtune.plugin:\n" + "\n".join(offenders)


def test_the_plugin_module_exports_everything_it_lists() -> None:
    import hubtune.plugin as plugin

    missing = [name for name in plugin.__all__ if not hasattr(plugin, name)]
    assert not missing
    for name in ("Source", "Backbone", "Preprocessor", "BlockSplit", "LoadOptions", "hookimpl", "LayerPools",
                 "pool_map", "pool_tokens", "BackboneOptionError", "ModelNotFoundError", "InputError"):
        assert name in plugin.__all__, name


def test_a_recorded_choice_replays_for_every_declared_pool() -> None:
    """What a head records (canonical layer and pool) is accepted again by the same declaration."""
    from hubtune.pooling import FEATURE_MAP, POOLED, TOKENS

    for pools in (FEATURE_MAP, TOKENS, POOLED):
        for name in (None, *pools.names, *pools.aliases):
            canonical = pools.canonical(name, "layer", "model")
            assert pools.canonical(canonical, "layer", "model") == canonical


def test_both_head_kinds_implement_the_head_protocol() -> None:
    import numpy as np

    from hubtune.finetune.saved import FinetunedHead
    from hubtune.heads.features import Normaliser
    from hubtune.heads.protocol import Head
    from hubtune.heads.trained import TrainedHead

    frozen = TrainedHead("linear", ["a", "b"], Normaliser("none", None, None),
                         {"weight": np.zeros((2, 3)), "bias": np.zeros(2)}, {"C": 1.0}, {"fingerprint": "f"})
    finetuned = FinetunedHead(["a", "b"], {"fingerprint": "f"}, {"kind": "linear"}, {})
    assert isinstance(frozen, Head) and isinstance(finetuned, Head)
