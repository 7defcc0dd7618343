"""Store and export: size on disk vs raw vector bytes, export MB/s, and peak memory of a large extract.

- size: 50,000 vectors at 384, 512, 768 and 2048 dims, stored float16 in batches of 256
  (target <= 1.3 x the raw bytes);
- export: 200,000 cached 384-d vectors to embeddings.npy + items.jsonl (target >= 200 MB/s of
  float32 vector data written);
- memory: peak resident memory of `hubtune extract` over 100,000 short texts with a 2-layer BERT
  (random weights, seeded into a private Hub cache): streaming keeps it flat (target < 2 GB).

Usage: python benchmarks/bench_store.py [--skip-memory]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save  # noqa: E402

FP = "ab" * 16


def keys(count: int, salt: int) -> list[bytes]:
    return [hashlib.blake2b(f"{salt}-{i}".encode(), digest_size=16).digest() for i in range(count)]


def fill(store, rows: int, dim: int, batch: int = 256) -> list[bytes]:
    import numpy as np

    rng = np.random.default_rng(dim)
    store.register(FP, {"source": "bench", "model": f"random-{dim}"}, dim, "float16")
    all_keys: list[bytes] = []
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        chunk = keys(n, start)
        store.put_batch(FP, chunk, rng.standard_normal((n, dim)).astype(np.float16))
        all_keys.extend(chunk)
    return all_keys


def size_ratios(work: Path) -> dict:
    from hubtune.store import EmbeddingStore

    out = {}
    for dim in (384, 512, 768, 2048):
        rows = 50_000
        with EmbeddingStore(work / f"size-{dim}") as store:
            fill(store, rows, dim)
        on_disk = (work / f"size-{dim}" / "data.mdb").stat().st_blocks * 512
        out[dim] = round(on_disk / (rows * dim * 2), 3)
        print(f"size: {dim}-d, {rows} vectors: store / raw bytes = {out[dim]:.3f} (target <= 1.3)", flush=True)
    return out


def export_rate(work: Path) -> dict:
    from hubtune.store import EmbeddingStore
    from hubtune.vectors import export_dataset

    rows, dim = 200_000, 384
    with EmbeddingStore(work / "export") as store:
        all_keys = fill(store, rows, dim)
        store.put_manifest("big", {"keys": [k.hex() for k in all_keys], "labels": [None] * rows,
                                   "splits": ["train"] * rows, "origins": [f"/data/{i}.txt" for i in range(rows)]})
    rates = []
    for repeat in range(3):
        with EmbeddingStore(work / "export", readonly=True) as store:
            start = time.perf_counter()
            export_dataset(store, FP, "big", work / f"out-{repeat}")
            seconds = time.perf_counter() - start
        rates.append(rows * dim * 4 / seconds / 1e6)
        print(f"export: {rows} x {dim} in {seconds:.2f}s = {rates[-1]:.0f} MB/s of float32 vectors (target >= 200)", flush=True)
    import numpy as np

    fills = []
    for _ in range(3):  # the floor under any export: first touch of fresh pages of the output size
        start = time.perf_counter()
        np.empty((rows, dim), dtype=np.float32).fill(1.0)
        fills.append(time.perf_counter() - start)
    print(f"export floor: filling a fresh {rows} x {dim} float32 array takes {min(fills):.2f}-{max(fills):.2f}s", flush=True)
    return {"rows": rows, "dim": dim, "mb_per_s": rates, "fresh_fill_seconds": fills}


def peak_memory(work: Path) -> dict:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from hubtune.hfhub import seed_snapshot
    from hubtune_hf.embedded import embedded_files

    os.environ["HF_HOME"] = str(work / "hf")
    folder = work / "tiny-bert"
    tokenizer = BertTokenizerFast(vocab_file=str(embedded_files() / "vocab.txt"))
    BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64), add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    seed_snapshot("bench/tiny-bert", folder)
    del torch
    count = 100_000
    table = work / "texts.jsonl"
    with open(table, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"text": f"item {i} says hello to item {i * 7 % 1000}", "label": str(i % 10)}) + "\n")
    command = [sys.executable, "-m", "hubtune", "extract", "hf:bench/tiny-bert", str(table), "--weights", "random",
               "--cache", str(work / "mem-store"), "--batch-size", "256", "--no-progress", "--json"]
    start = time.perf_counter()
    result = subprocess.run(command, check=True, capture_output=True, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = json.loads(result.stdout)
    print(f"memory: extract of {count} texts took {seconds:.1f}s, computed {summary['computed']}, "
          f"peak RSS {peak_mb:.0f} MB (target < 2048)", flush=True)
    return {"items": count, "seconds": seconds, "peak_rss_mb": peak_mb, "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hubtune-bench-store-"))
    result = {"size_ratio": size_ratios(work), "export": export_rate(work)}
    if not args.skip_memory:
        result["memory"] = peak_memory(work)
    print(f"saved {save('store', result)}")


if __name__ == "__main__":
    main()
