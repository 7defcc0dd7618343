"""Store and export: size on disk vs raw vector bytes, and export MB/s.

- size: 50,000 vectors at 384, 512, 768 and 2048 dims, stored float16 in batches of 256
  (target <= 1.3 x the raw bytes);
- export: 200,000 cached 384-d vectors to embeddings.npy + items.jsonl (target >= 200 MB/s of
  float32 vector data written), next to the floor under any export on this machine: filling a fresh
  array of the output's size.

Peak memory of a large extract is measured by bench_growth.py.

Usage: python benchmarks/bench_store.py
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fact_row, save  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hubtune-bench-store-"))
    result = {"size_ratio": size_ratios(work), "export": export_rate(work)}
    sizes, export = result["size_ratio"], result["export"]
    result["summary"] = [
        fact_row("store size / raw float16 bytes, 50,000 vectors",
                 ", ".join(f"{ratio:.2f} ({dim}-d)" for dim, ratio in sizes.items()), "<= 1.3"),
        fact_row("export of 200,000 x 384 vectors, MB/s of float32 written",
                 f"{min(export['mb_per_s']):.0f}-{max(export['mb_per_s']):.0f} MB/s (a fresh-array fill alone takes "
                 f"{min(export['fresh_fill_seconds']):.2f}-{max(export['fresh_fill_seconds']):.2f} s)", ">= 200"),
    ]
    print(f"saved {save('store', result)}")


if __name__ == "__main__":
    main()
