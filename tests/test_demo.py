"""`hubtune demo` runs offline on the embedded default and finds the paraphrase pairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def test_demo_runs_offline_and_finds_paraphrases() -> None:
    result = subprocess.run([sys.executable, "-m", "hubtune", "demo", "--json"], capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True)
    data = json.loads(result.stdout)
    assert data["dim"] == 384 and data["model"].startswith("hf:sentence-transformers/all-MiniLM-L6-v2@")
    found, total = map(int, data["paraphrase_pairs_found"].split("/"))
    assert found >= total - 2, data["neighbours"]
