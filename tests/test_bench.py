"""`hubtune bench`: a row per grid point, positive throughput, stable JSON/CSV columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hubtune.backbone import LoadOptions
from hubtune.bench import COLUMNS, run_grid
from tests.test_cli import hubtune


def test_grid_rows_for_image_and_text_models(tiny_bert_repo: str) -> None:
    options = LoadOptions(weights="random", device="cpu")
    rows = run_grid("timm:test_resnet", options, [1, 2], ["fp32"], channels_last=(True, False), warmup=1, iters=2,
                    repeats=2)
    assert [(r.batch_size, r.channels_last) for r in rows] == [(1, True), (2, True), (1, False), (2, False)]
    assert all(r.items_per_s > 0 and r.ms_per_step_min <= r.ms_per_step <= r.ms_per_step_max for r in rows)
    assert rows[0].gmacs and rows[0].param_count_m > 0
    text = run_grid(f"hf:{tiny_bert_repo}", options, [3], ["fp32"], warmup=1, iters=2, repeats=1)
    assert len(text) == 1 and text[0].items_per_s > 0


def test_cli_json_and_csv_columns(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    result = hubtune("bench", "timm:test_resnet", "--weights", "random", "--batch-sizes", "1,2", "--precision", "fp32",
                     "--warmup", "1", "--iters", "2", "--repeats", "1", "--csv", str(out), "--json")
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and all(tuple(row) == COLUMNS for row in rows)
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS and len(list(reader)) == 2
    bad = hubtune("bench", "timm:test_resnet", "--weights", "random", "--precision", "fp64", check=False)
    assert bad.returncode == 2 and "fp64" in bad.stderr
