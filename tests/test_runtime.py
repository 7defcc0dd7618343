"""Device and precision choices: what ``--precision auto`` resolves to, and the
``HUBTUNE_AUTO_PRECISION`` switch that forces it (so a suite can run one path on any CPU)."""

from __future__ import annotations

import pytest

from hubtune import runtime
from hubtune.errors import BackboneOptionError


@pytest.fixture
def cpu():
    import torch

    return torch.device("cpu")


@pytest.mark.parametrize("fast_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_cpu_when_the_switch_is_unset(monkeypatch: pytest.MonkeyPatch, cpu, fast_bf16: bool,
                                                       expected: str) -> None:
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: fast_bf16)
    for unset in (None, "", "  "):
        if unset is None:
            monkeypatch.delenv("HUBTUNE_AUTO_PRECISION", raising=False)
        else:
            monkeypatch.setenv("HUBTUNE_AUTO_PRECISION", unset)
        assert runtime.resolve_precision("auto", cpu) == expected


@pytest.mark.parametrize("fast_bf16", [True, False])
@pytest.mark.parametrize("forced", ["fp32", "bf16", "fp16", " BF16 "])
def test_the_switch_forces_auto_whatever_the_cpu(monkeypatch: pytest.MonkeyPatch, cpu, fast_bf16: bool,
                                                 forced: str) -> None:
    monkeypatch.setattr(runtime, "cpu_has_fast_bf16", lambda: fast_bf16)
    monkeypatch.setenv("HUBTUNE_AUTO_PRECISION", forced)
    assert runtime.resolve_precision("auto", cpu) == forced.strip().lower()


@pytest.mark.parametrize("explicit", ["fp32", "bf16", "fp16"])
def test_the_switch_never_changes_an_explicit_precision(monkeypatch: pytest.MonkeyPatch, cpu, explicit: str) -> None:
    for forced in ("fp32", "bf16", "fp16"):
        monkeypatch.setenv("HUBTUNE_AUTO_PRECISION", forced)
        assert runtime.resolve_precision(explicit, cpu) == explicit


@pytest.mark.parametrize("value", ["auto", "fp64", "float32"])
def test_a_bad_switch_value_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, cpu, value: str) -> None:
    monkeypatch.setenv("HUBTUNE_AUTO_PRECISION", value)
    with pytest.raises(BackboneOptionError, match="HUBTUNE_AUTO_PRECISION"):
        runtime.resolve_precision("auto", cpu)


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_a_backbone_loaded_with_auto_runs_the_forced_precision(monkeypatch: pytest.MonkeyPatch, forced: str) -> None:
    import hubtune

    monkeypatch.setenv("HUBTUNE_AUTO_PRECISION", forced)
    backbone = hubtune.load_backbone("timm:test_resnet", weights="random:1", device="cpu", precision="auto")
    assert backbone.precision == forced
    assert backbone.fingerprint_fields()["precision"] == forced


def test_the_request_memo_tells_forced_auto_precisions_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A rerun with auto forced to another precision must not reuse the memo of the first run's vectors."""
    from hubtune.backbone import LoadOptions
    from hubtune.store.requests import request_key, request_record

    keys = set()
    for forced in ("fp32", "bf16"):
        monkeypatch.setenv("HUBTUNE_AUTO_PRECISION", forced)
        keys.add(request_key(request_record("timm:test_resnet", LoadOptions(), "float16")))
    assert len(keys) == 2
