"""`hubtune bench`: a row per grid point, positive throughput, stable JSON/CSV columns."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from hubtune.backbone import LoadOptions
from hubtune.bench.grid import COLUMNS, run_grid


def test_grid_rows_for_image_and_text_models(tiny_bert_repo: str) -> None:
    options = LoadOptions(weights="random", device="cpu")
    rows = run_grid("timm:test_resnet", options, [1, 2], ["fp32"], channels_last=(True, False), warmup=1, iters=2,
                    repeats=2)
    assert [(r.batch_size, r.channels_last) for r in rows] == [(1, True), (2, True), (1, False), (2, False)]
    assert all(r.items_per_s > 0 and r.ms_per_step_min <= r.ms_per_step <= r.ms_per_step_max for r in rows)
    assert rows[0].gmacs and rows[0].param_count_m > 0
    text = run_grid(f"hf:{tiny_bert_repo}", options, [3], ["fp32"], warmup=1, iters=2, repeats=1)
    assert len(text) == 1 and text[0].items_per_s > 0


def test_cli_json_and_csv_columns(run_hubtune, tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    result = run_hubtune("bench", "timm:test_resnet", "--weights", "random", "--batch-sizes", "1,2",
                         "--precision", "fp32", "--warmup", "1", "--iters", "2", "--repeats", "1", "--csv", str(out), "--json")
    rows = json.loads(result.stdout)
    assert len(rows) == 2 and all(tuple(row) == COLUMNS for row in rows)
    with open(out, newline="") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames) == COLUMNS and len(list(reader)) == 2
    bad = run_hubtune("bench", "timm:test_resnet", "--weights", "random", "--precision", "fp64", check=False)
    assert bad.returncode == 2 and "fp64" in bad.stderr


def test_e2e_stage_shares_cover_the_profiled_pass(run_hubtune, make_image_folder, tmp_path: Path) -> None:
    from hubtune.bench.e2e import STAGES

    data = make_image_folder(tmp_path / "images", per_class=8)
    (data / "cat" / "broken.png").write_bytes(b"not an image")
    result = run_hubtune("bench", "timm:test_resnet", "--weights", "random", "--e2e", "--data", str(data),
                         "--batch-sizes", "1,4", "--workers", "0", "--json")
    [report] = json.loads(result.stdout)
    assert (report["items"], report["failed"], report["batch_size"]) == (17, 1, 4)
    assert report["items_per_s"] > 0 and report["profiled_items_per_s"] > 0
    assert tuple(report["shares"]) == STAGES and all(share >= 0 for share in report["shares"].values())
    assert sum(report["shares"].values()) <= 1 + 0.00005 * len(STAGES), report["shares"]  # parts of one pass
    assert report["shares"]["forward"] > 0 and report["shares"]["decode"] > 0 and report["shares"]["store_write"] > 0
    assert report["bound"] in STAGES and report["bound_group"] in ("loader", "compute", "writer")
    usage = run_hubtune("bench", "timm:test_resnet", "--weights", "random", "--e2e", check=False)
    assert usage.returncode == 2 and "--data" in usage.stderr


def test_text_e2e_and_the_bound(tiny_bert_repo: str, tmp_path: Path, monkeypatch) -> None:
    from collections import Counter

    from hubtune.api import load_backbone
    from hubtune.bench.e2e import STAGES, _bound, _Clock, run_e2e

    table = tmp_path / "texts.jsonl"
    table.write_text("".join(json.dumps({"text": f"sentence number {i} " * (i % 7 + 1)}) + "\n" for i in range(40)))
    backbone = load_backbone(f"hf:{tiny_bert_repo}", LoadOptions(weights="random", device="cpu"))
    clocked, clock = Counter(), _Clock.__call__

    def counted(self, stage: str):  # type: ignore[no-untyped-def]
        clocked[stage] += 1
        return clock(self, stage)

    monkeypatch.setattr(_Clock, "__call__", counted)
    report = run_e2e(backbone, table, batch_size=8, workers=0, limit=30)
    assert report.items == 30 and report.failed == 0 and report.shares["decode"] == 0
    # the shares cover the profiled pass: every stage of each of its 4 batches ran under the clock (counted,
    # not timed; preprocess twice a batch: tokenising, then collating)
    assert clocked == {"read": 4, "preprocess": 8, "host_to_device": 4, "forward": 4, "device_to_host": 4,
                       "store_write": 4}
    assert set(clocked) <= set(STAGES) and sum(report.shares.values()) <= 1 + 0.00005 * len(STAGES)
    # the loader side runs in worker processes: its time is divided among them before comparing
    seconds = {"read": 1.0, "decode": 2.0, "preprocess": 3.0, "forward": 4.0, "store_write": 0.5}
    assert _bound(seconds, workers=0) == ("preprocess", "loader")
    assert _bound(seconds, workers=2) == ("forward", "compute")


def test_real_inputs_and_plot(run_hubtune, make_image_folder, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=2)
    plot = tmp_path / "bench.png"
    result = run_hubtune("bench", "timm:test_resnet", "--weights", "random", "--data", str(data),
                         "--batch-sizes", "1,2", "--precision", "fp32,bf16", "--warmup", "0", "--iters", "1",
                         "--repeats", "1", "--plot", str(plot), "--json")
    rows = json.loads(result.stdout)
    assert [(r["precision"], r["batch_size"]) for r in rows] == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
