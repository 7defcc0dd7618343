"""benchmarks/gpu_check.sh runs end to end (GPU_CHECK_SMOKE=1: CPU, tiny timm models), so GPU time
is not lost on a broken script or a renamed bench column."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_smoke_run(tmp_path: Path) -> None:
    env = {**os.environ, "GPU_CHECK_SMOKE": "1", "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (ceilings,) = tmp_path.glob("gpu-ceilings-*.json")
    assert json.loads(ceilings.read_text())["matmul_tflops"] > 0
    for model in ("test_resnet", "test_vit"):
        (bench,) = tmp_path.glob(f"gpu-bench-{model}-*.json")
        (row,) = json.loads(bench.read_text())
        assert row["error"] is None and row["items_per_s"] > 0 and row["gmacs"] > 0
        assert f"timm:{model} bs=2 fp32:" in done.stdout and "of the measured ceiling" in done.stdout
