"""The fingerprint changes when any one of its fields changes, and is stable across processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hubtune.fingerprint import FIELDS, STORE_FORMAT_VERSION, compute_fingerprint

BASE = {
    "source": "timm",
    "model": "resnet50.a1_in1k",
    "revision": "0123456789abcdef0123456789abcdef01234567",
    "weights": "default",
    "layer": "pre_logits",
    "pool": "native",
    "preprocess": {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                   "interpolation": "bicubic", "crop_pct": 0.95, "crop_mode": "center"},
    "precision": "fp32",
    "stored_dtype": "float16",
    "format": STORE_FORMAT_VERSION,
}

CHANGED = {
    "source": "torchvision",
    "model": "resnet50.tv_in1k",
    "revision": "1123456789abcdef0123456789abcdef01234567",
    "weights": "random:0",
    "layer": "layer3",
    "pool": "gem",
    "preprocess": {**BASE["preprocess"], "crop_pct": 0.875},
    "precision": "bf16",
    "stored_dtype": "float32",
    "format": STORE_FORMAT_VERSION + 1,
}


def test_every_field_has_a_change_case() -> None:
    assert set(CHANGED) == set(FIELDS) == set(BASE)


@pytest.mark.parametrize("field", FIELDS)
def test_changing_one_field_changes_the_fingerprint(field: str) -> None:
    assert compute_fingerprint({**BASE, field: CHANGED[field]}) != compute_fingerprint(BASE)


@pytest.mark.parametrize("key,value", [("mean", [0.5, 0.5, 0.5]), ("interpolation", "bilinear"),
                                       ("input_size", [3, 256, 256]), ("max_length", 128)])
def test_each_preprocessing_detail_counts(key: str, value: object) -> None:
    changed = {**BASE, "preprocess": {**BASE["preprocess"], key: value}}
    assert compute_fingerprint(changed) != compute_fingerprint(BASE)


def test_key_order_does_not_matter() -> None:
    reordered = dict(reversed(list(BASE.items())))
    reordered["preprocess"] = dict(reversed(list(BASE["preprocess"].items())))
    assert compute_fingerprint(reordered) == compute_fingerprint(BASE)


def test_missing_or_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="missing"):
        compute_fingerprint({k: v for k, v in BASE.items() if k != "layer"})
    with pytest.raises(ValueError, match="unexpected"):
        compute_fingerprint({**BASE, "colour": "blue"})


def test_format_is_16_bytes_hex() -> None:
    value = compute_fingerprint(BASE)
    assert len(value) == 32 and int(value, 16) >= 0


def test_stable_across_processes() -> None:
    code = (
        "import json, sys; from hubtune.fingerprint import compute_fingerprint; "
        "print(compute_fingerprint(json.loads(sys.stdin.read())))"
    )
    results = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], input=json.dumps(BASE), env=env,
                             capture_output=True, text=True, check=True)
        results.add(out.stdout.strip())
    assert results == {compute_fingerprint(BASE)}


def test_backbone_fingerprint_stable_across_processes() -> None:
    code = (
        "import hubtune; b = hubtune.load_backbone('timm:test_resnet', weights='random:3', precision='fp32', "
        "device='cpu'); print(b.fingerprint())"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed},
                       capture_output=True, text=True, check=True).stdout.strip()
        for seed in ("0", "99")
    }
    assert len(outputs) == 1 and len(outputs.pop()) == 32


@pytest.mark.parametrize(
    "change",
    [{"layer": "features"}, {"layer": "layer2"}, {"pool": "max"}, {"precision": "bf16"},
     {"weights": "random:4"}, {"pool": "avg"}],
    ids=lambda c: next(iter(c.items()))[0] + "=" + str(next(iter(c.values()))),
)
def test_backbone_options_change_the_fingerprint(change: dict) -> None:
    import hubtune

    base = dict(weights="random:3", precision="fp32", device="cpu")
    before = hubtune.load_backbone("timm:test_resnet", **base).fingerprint()
    after = hubtune.load_backbone("timm:test_resnet", **{**base, **change}).fingerprint()
    assert before != after


def test_weights_are_their_own_field_never_part_of_the_revision(tmp_path) -> None:
    import hubtune

    random = hubtune.load_backbone("timm:test_resnet", weights="random:3", device="cpu")
    fields = random.fingerprint_fields()
    assert fields["weights"] == "random:3" and fields["revision"] is None
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in random.model.state_dict().items()}, str(path))
    from_file = hubtune.load_backbone("timm:test_resnet", weights=str(path), device="cpu")
    assert from_file.weights.startswith("file-sha256:") and from_file.revision is None


def test_stored_dtype_changes_the_backbone_fingerprint() -> None:
    import hubtune

    backbone = hubtune.load_backbone("timm:test_resnet", weights="random", device="cpu")
    assert backbone.fingerprint("float16") != backbone.fingerprint("float32")
