"""The CLI contract for sources / models / pull / info, and the cost of importing hubtune."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "faiss", "timm", "torchvision", "numpy")


def test_import_and_help_load_no_heavy_library() -> None:
    code = (
        "import sys, hubtune\n"
        "from hubtune.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print([m for m in {HEAVY!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_help_through_the_entry_point_imports_no_heavy_library(run_hubtune) -> None:
    """``python -m hubtune --help`` stays light: checked by what it imports (Python's import-time report),
    not by how long it takes (timings belong in benchmarks/)."""
    result = run_hubtune("--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert "Commands:" in result.stdout
    imported = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()
                if line.startswith("import time:") and not line.rstrip().endswith("imported package")}
    assert "hubtune" in imported, "no import-time report: the check would be vacuous"
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_sources_json(run_hubtune) -> None:
    rows = json.loads(run_hubtune("sources", "--json").stdout)
    names = {row["name"] for row in rows}
    assert {"hf", "timm", "torchvision"} <= names
    for row in rows:
        assert set(row) >= {"name", "plugin", "version"}


def test_models_json_filters_by_pattern_and_source(run_hubtune) -> None:
    rows = json.loads(run_hubtune("models", "resnet18*", "--json").stdout)
    assert rows and all(set(r) >= {"ref", "source", "modality"} for r in rows)
    assert {r["source"] for r in rows} == {"timm", "torchvision"}
    only = json.loads(run_hubtune("models", "resnet18*", "--source", "torchvision", "--json").stdout)
    assert only and {r["source"] for r in only} == {"torchvision"}
    assert "torchvision:resnet18@IMAGENET1K_V1" in {r["ref"] for r in only}
    hf = json.loads(run_hubtune("models", "--source", "hf", "--json").stdout)
    assert {"ref": "hf:sentence-transformers/all-MiniLM-L6-v2", "source": "hf", "modality": "text"} in hf


def test_pull_embedded_default_offline(run_hubtune) -> None:
    data = json.loads(run_hubtune("pull", "hf:sentence-transformers/all-MiniLM-L6-v2", "--offline", "--json").stdout)
    assert set(data) >= {"ref", "revision", "path"}
    assert len(data["revision"]) == 40 and data["ref"].endswith("@" + data["revision"])
    assert os.path.isfile(os.path.join(data["path"], "model.safetensors"))


def test_info_embedded_default_offline(run_hubtune) -> None:
    data = json.loads(run_hubtune("info", "sentence-transformers/all-MiniLM-L6-v2", "--offline", "--json").stdout)
    assert set(data) >= {"ref", "source", "modality", "dim", "revision", "fingerprint", "layers", "preprocess"}
    assert data["source"] == "hf" and data["modality"] == "text" and data["dim"] == 384
    assert data["preprocess"]["max_length"] == 256 and data["preprocess"]["normalize"] is True
    assert "last" in data["layers"] and len(data["fingerprint"]) == 32


def test_info_timm_random_and_layer_options(run_hubtune) -> None:
    data = json.loads(run_hubtune("info", "timm:test_resnet", "--weights", "random", "--layer", "layer3",
                                  "--json").stdout)
    import timm

    channels = {i["module"]: i["num_chs"] for i in timm.create_model("test_resnet").feature_info}
    assert data["dim"] == channels["layer3"] and data["pool"] == "avg" and data["weights"] == "random:0"
    assert data["preprocess"]["input_size"] == [3, 160, 160]


def test_unknown_layer_lists_valid_ones(run_hubtune) -> None:
    result = run_hubtune("info", "timm:test_resnet", "--weights", "random", "--layer", "nope", check=False)
    assert result.returncode == 2
    assert "valid layers: pre_logits, features, act1, layer1" in result.stderr


@pytest.mark.parametrize(
    "ref,needle",
    [("resnet18", "timm:resnet18, torchvision:resnet18"), ("../x", "local path"),
     ("nosuch:model", "installed sources: hf, open_clip, timm, torchvision"), ("definitely_not_a_model", "no installed source")],
)
def test_reference_errors_are_one_clear_line(run_hubtune, ref: str, needle: str) -> None:
    result = run_hubtune("info", ref, "--weights", "random", check=False)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_offline_missing_weights_fail_cleanly(run_hubtune) -> None:
    result = run_hubtune("pull", "timm:resnet18.a1_in1k", "--offline", check=False)
    assert result.returncode == 1
    assert "offline mode is on" in result.stderr and "Traceback" not in result.stderr
    result = run_hubtune("pull", "torchvision:resnet18", "--offline", check=False)
    assert result.returncode == 1 and "offline mode is on" in result.stderr
