"""Helpers shared by the benchmark scripts: a reproducible corpus, timing, and result files."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from datetime import date
from pathlib import Path
from typing import Callable

RESULTS = Path(__file__).parent / "results"


def sentences(count: int = 5000, seed: int = 0) -> list[str]:
    """Mixed-length English-like sentences (3 to 150 words) from the bundled model's vocabulary."""
    from hubtune_hf.embedded import embedded_files

    vocab = [w for w in (embedded_files() / "vocab.txt").read_text().split() if w.isalpha() and len(w) > 2]
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        length = int(min(150, max(3, rng.lognormvariate(2.8, 0.8))))
        out.append(" ".join(rng.choice(vocab) for _ in range(length)).capitalize() + ".")
    return out


def text_arguments(doc: str) -> argparse.Namespace:
    """``--sentences`` and ``--repeats`` of the text benchmarks (and offline: the model is bundled)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return parser.parse_args()


def timed(func: Callable[[], object]) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.3f}s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def machine() -> dict:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next((line.split(":", 1)[1].strip() for line in flags.splitlines() if line.startswith("model name")), "?")
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "cpu_bf16": "avx512_bf16" in flags or "amx_bf16" in flags}


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    quick = "-quick" if os.environ.get("HUBTUNE_BENCH_QUICK") else ""  # smoke runs never overwrite real results
    path = RESULTS / f"{name}-{platform.node() or 'machine'}-{date.today().isoformat()}{quick}.json"
    path.write_text(json.dumps({"machine": machine(), **payload}, indent=2))
    return path


def summary_row(measurement: str, peer_s: list[float], ours_s: list[float], target: str) -> dict:
    """One line of the results table: how many times faster hubtune is (peer time / hubtune time),
    as the ratio of medians with the per-repeat ratios' spread (repeats alternate, so they pair)."""
    runs = [peer / ours for peer, ours in zip(peer_s, ours_s)]
    ratio = statistics.median(peer_s) / statistics.median(ours_s)
    return {"measurement": measurement, "result": f"{ratio:.2f}x (per repeat {min(runs):.2f}-{max(runs):.2f}, n={len(runs)})",
            "ratio": round(ratio, 3), "target": target}


def fact_row(measurement: str, result: str, target: str) -> dict:
    """A line of the results table that is not a speed ratio (sizes, memory, agreement)."""
    return {"measurement": measurement, "result": result, "target": target}
