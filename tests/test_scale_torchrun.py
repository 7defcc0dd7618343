"""``extract --engine torchrun`` under ``torchrun --standalone --nproc_per_node=2`` (gloo, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyarrow")

from click.testing import CliRunner  # noqa: E402

from hubtune.cli import cli  # noqa: E402

MODEL_ARGS = ["--weights", "random:3", "--device", "cpu", "--precision", "fp32", "--no-progress", "--json"]


@pytest.mark.slow
def test_two_ranks_match_a_plain_run(assert_same_store, text_table, tmp_path: Path, tiny_bert_repo: str) -> None:
    data = text_table(tmp_path / "reviews.jsonl", 200)
    ref = f"hf:{tiny_bert_repo}"
    plain = CliRunner().invoke(cli, ["extract", ref, str(data), "--cache", str(tmp_path / "plain"), *MODEL_ARGS])
    assert plain.exit_code == 0, plain.output
    shards = tmp_path / "shards"
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "hubtune",
              "extract", ref, str(data), "--engine", "torchrun", "--shards", "5", "--batch-size", "16",
              "--cache", str(tmp_path / "cache"), "--shards-dir", str(shards), *MODEL_ARGS]
    result = subprocess.run(launch, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", **os.environ})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # rank 0 alone reports
    assert (summary["engine"], summary["total"], summary["shards_run"], summary["failed"]) == ("torchrun", 200, 5, 1)
    assert summary["merged"] and len(list((shards / "_done").glob("*.json"))) == 5
    assert_same_store(tmp_path / "cache", tmp_path / "plain", "reviews")
