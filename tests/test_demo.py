"""`hubtune demo` runs offline on the embedded default, beats the majority baseline, repeats exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hubtune.demo import SHOWN, is_blocked


def run_demo(tmp_path: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "hubtune", "demo", "--cache", str(tmp_path / "cache"), "--report",
         str(tmp_path / "report"), "--json"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=True,
    )
    return json.loads(result.stdout), time.perf_counter() - start


def test_demo_end_to_end(tmp_path: Path) -> None:
    first, seconds = run_demo(tmp_path)  # the time is printed, never asserted on
    print(f"demo: {seconds:.1f}s; linear {first['linear']['accuracy']:.3f}, knn {first['knn']['accuracy']:.3f}, "
          f"majority {first['majority_baseline']:.3f}")
    assert first["model"].startswith("hf:sentence-transformers/all-MiniLM-L6-v2@")
    assert first["dataset"]["items"] > 3000 and first["dataset"]["classes"] == ["negative", "positive"]
    assert first["linear"]["accuracy"] >= first["majority_baseline"] + 0.15  # a clear margin
    assert first["knn"]["accuracy"] >= first["majority_baseline"] + 0.1
    assert "great" in first["neighbours"]["excellent"] or "wonderful" in first["neighbours"]["excellent"]
    for query, shown in first["neighbours"].items():  # the query word, then the neighbours printed
        assert shown[0] == query and len(shown) == 1 + SHOWN
        assert not [w for w in shown if is_blocked(w)], f"{query}: offensive neighbours shown: {shown}"
    report = Path(first["report"])
    for name in ("confusion_linear.png", "embedding_map.png", "metrics.json"):
        assert (report / name).stat().st_size > 0
    assert (report / "confusion_linear.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    second, _ = run_demo(tmp_path)  # reproducible: same numbers, and nothing recomputed
    assert second["extract"]["computed"] == 0
    for key in ("majority_baseline", "linear", "knn", "neighbours"):
        assert second[key] == first[key]


def test_block_list_covers_entries_that_contain_a_blocked_word() -> None:
    assert is_blocked("fucking good") and is_blocked("damn cute") and is_blocked("Bullshit")
    assert not is_blocked("good") and not is_blocked("class") and not is_blocked("passionate")
