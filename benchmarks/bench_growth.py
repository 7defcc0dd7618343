"""Growth: does `hubtune extract` cost grow linearly with the data, and does its memory stay flat?

The whole command over 1,000, 10,000 and 100,000 short texts with a 2-layer BERT (random weights,
seeded into a private Hub cache, so the model is cheap and the pipeline around it shows), each into
a fresh store: items/s (embedding rate, model loading excluded), wall time, and the process's own
peak resident memory (from wait4, not the whole process tree's maximum).

Usage: python benchmarks/bench_growth.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fact_row, save  # noqa: E402

MODEL = "hf:bench/tiny-bert"


def tiny_bert(work: Path) -> None:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from hubtune.hfhub import seed_snapshot
    from hubtune_hf.embedded import embedded_files

    folder = work / "tiny-bert"
    tokenizer = BertTokenizerFast(vocab_file=str(embedded_files() / "vocab.txt"))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64), add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    seed_snapshot("bench/tiny-bert", folder)


def texts(path: Path, count: int) -> Path:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"text": f"item {i} says hello to item {i * 7 % 1000}", "label": str(i % 10)}) + "\n")
    return path


def run(work: Path, count: int) -> dict:
    """One whole `hubtune extract` command; its own peak RSS comes from wait4."""
    table = texts(work / f"texts-{count}.jsonl", count)
    command = [sys.executable, "-m", "hubtune", "extract", MODEL, str(table), "--weights", "random",
               "--cache", str(work / f"store-{count}"), "--batch-size", "256", "--no-progress", "--json"]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"extract of {count} texts failed with status {status}")
    summary = json.loads(out)
    row = {"items": count, "seconds": round(seconds, 2), "items_per_s": summary["items_per_s"],
           "peak_rss_mb": round(usage.ru_maxrss / 1024)}
    print(f"{count:>7} texts: {seconds:6.1f}s whole command, {summary['items_per_s']:,.0f} items/s, "
          f"peak RSS {row['peak_rss_mb']} MB", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,100000")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hubtune-bench-growth-"))
    os.environ["HF_HOME"] = str(work / "hf")
    os.environ["HF_HUB_OFFLINE"] = "1"
    tiny_bert(work)
    rows = [run(work, int(size)) for size in args.sizes.split(",")]
    first, last = rows[0], rows[-1]
    rate_change = last["items_per_s"] / first["items_per_s"]
    memory_change = last["peak_rss_mb"] / first["peak_rss_mb"]
    print(f"{first['items']} -> {last['items']} items: items/s x{rate_change:.2f} (1.0 = cost linear in items), "
          f"peak memory x{memory_change:.2f} (1.0 = flat)")
    summary = [
        fact_row(f"extract growth {first['items']:,} -> {last['items']:,} texts (2-layer BERT), items/s",
                 " / ".join(f"{r['items_per_s']:,.0f}" for r in rows) + f" (x{rate_change:.2f})", "about flat (linear cost)"),
        fact_row("extract peak RSS at " + " / ".join(f"{r['items']:,}" for r in rows) + " texts",
                 " / ".join(f"{r['peak_rss_mb']} MB" for r in rows), "flat, < 2 GB"),
    ]
    print(f"saved {save('growth', {'rows': rows, 'summary': summary})}")


if __name__ == "__main__":
    main()
