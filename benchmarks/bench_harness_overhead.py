"""Does `hubtune bench` add overhead of its own? Its model-only numbers vs a bare
`torch.inference_mode()` loop over the same model, batch size and precision, timed the same way,
alternating, several repeats (target: within 10 %).

Usage: python benchmarks/bench_harness_overhead.py [--model timm:resnet18] [--batch-size 32] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import save, summary_row  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="timm:resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch

    import hubtune
    from hubtune.backbone import LoadOptions
    from hubtune.bench.grid import run_grid, synthetic_items

    options = LoadOptions(weights="random", device="cpu", precision="fp32")
    backbone = hubtune.load_backbone(args.model, options)
    batch = backbone.to_device(backbone.preprocessor.collate(
        [backbone.preprocessor(item) for item in synthetic_items(backbone, args.batch_size)]))

    def bare() -> float:
        with torch.inference_mode():
            for _ in range(3):
                backbone.forward(batch)
            steps = []
            for _ in range(10):
                start = time.perf_counter()
                backbone.forward(batch)
                steps.append(time.perf_counter() - start)
        return args.batch_size / statistics.median(steps)

    ours, theirs = [], []
    for _ in range(args.repeats):
        ours.append(run_grid(args.model, options, [args.batch_size], ["fp32"], warmup=3, iters=10, repeats=1,
                             load=lambda ref, opts: backbone)[0].items_per_s)
        theirs.append(bare())
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"hubtune bench: {statistics.median(ours):.1f} items/s; bare loop: {statistics.median(theirs):.1f} items/s; "
          f"ratio {ratio:.3f} (target within 10 %)")
    row = summary_row(f"`hubtune bench` vs bare inference_mode loop ({args.model}, batch {args.batch_size}, fp32)",
                      [1 / rate for rate in theirs], [1 / rate for rate in ours], "0.9-1.1")
    print(f"saved {save('harness-overhead', {'model': args.model, 'hubtune': ours, 'bare': theirs, 'ratio': ratio, 'summary': [row]})}")


if __name__ == "__main__":
    main()
