"""Fine-tuning: an epoch of ``--unfreeze 1`` from cached split-point activations vs recomputing.

A timm ResNet (``resnet50`` by default, ``--model timm:resnet18`` too; random weights, no download)
at 64 x 64 on the CPU, 512 PNG images in 10 classes. The cached epoch reads the float16 activations
at the input of the last residual block from memory and trains that block + the head; the
recomputing epoch reads and decodes every image, preprocesses it, runs the frozen stem and every
block below the last, then trains the same top. Both use hubtune's own code (``RecomputedBatches`` /
``CachedBatches`` through ``train_top``, one epoch each) and alternate, so load on a shared machine
hits both alike. Target: cached >= 3x faster. The one-off cost of filling the cache (one pass of the
frozen part, written to LMDB) is reported too.

The ratio cannot pass (prefix forward + top forward/backward) / (top forward/backward) in FLOPs,
which the script counts (torch's FlopCounterMode) and prints next to it.

Usage: python benchmarks/bench_finetune.py [--model timm:resnet50] [--repeats 5] [--images 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fact_row, save, spread, summary_row, timed  # noqa: E402

SIZE = 64
CLASSES = 10


def make_images(root: Path, count: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"c{i % CLASSES}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        (folder / f"{i}.png").write_bytes(buffer.getvalue())


def small_backbone(model: str = "timm:resnet18") -> object:
    from torchvision import transforms as T

    import hubtune
    from hubtune.backbone import ImagePreprocessor

    backbone = hubtune.load_backbone(model, weights="random", precision="fp32", device="cpu")
    backbone.preprocessor = ImagePreprocessor(T.Compose([T.Resize((SIZE, SIZE)), T.ToTensor(),
                                                         T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]))
    backbone.preprocess_config = {"input_size": [3, SIZE, SIZE], "bench": True}
    return backbone


def flop_bound(backbone: object, split: object, start: int) -> float:
    """(prefix forward + top forward/backward) / (top forward/backward), counting backward as 2 forwards."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    batch = backbone.to_device(backbone.preprocessor.collate([backbone.preprocessor(backbone.probe_item())]))
    with torch.no_grad(), FlopCounterMode(display=False) as whole:
        split.prefix(batch, len(split.blocks))
    with torch.no_grad(), FlopCounterMode(display=False) as prefix:
        split.prefix(batch, start)
    top = whole.get_total_flops() - prefix.get_total_flops()
    return (prefix.get_total_flops() + 3 * top) / (3 * top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--model", default="timm:resnet50", help="a timm ResNet (random weights)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no oversubscription on a shared box)")
    args = parser.parse_args()
    import torch

    from hubtune.data import open_dataset
    from hubtune.finetune.activations import CachedBatches, RecomputedBatches, SplitEncoder, cache_activations
    from hubtune.finetune.blocks import build_top, split_point, top_parameters
    from hubtune.finetune.train import TrainConfig, param_groups, train_top
    from hubtune.store import EmbeddingStore

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    make_images(work / "data", args.images)
    backbone = small_backbone(args.model)
    split = backbone.blocks()
    start = split_point(split, 1)
    encoder = SplitEncoder(backbone, split, start)
    items = open_dataset(work / "data").items()
    with EmbeddingStore(work / "cache") as store:
        fill_s = timed(lambda: cache_activations(encoder, work / "data", store, "data", 64, 0, progress=False))
        stored = cache_activations(encoder, work / "data", store, "data", 64, 0, progress=False)  # already there: a read
    labels = sorted({item.label for item in items})
    y = np.array([labels.index(label) for label in stored.labels])
    train, val = np.arange(len(y)), np.array([], dtype=np.int64)
    top = build_top(split, start, torch.nn.Linear(backbone.dim, CLASSES))
    for parameter in top.parameters():
        parameter.requires_grad_(True)
    depths = top_parameters(split, start) + [(len(split.blocks) + 1, p) for p in top.head.parameters()]
    config = TrainConfig(epochs=1, batch_size=64)
    sources = {"cached": CachedBatches(encoder, stored.vectors, backbone.device),
               "recompute": RecomputedBatches(encoder, items)}

    def epoch(mode: str) -> None:
        groups = param_groups(depths, len(split.blocks) + 1, config.lr, config.weight_decay, config.layer_decay)
        train_top(top, groups, sources[mode], y, train, val, config, backbone.autocast, progress=False)

    epoch("cached"), epoch("recompute")  # warm-up: allocator, kernels, file cache
    times: dict[str, list[float]] = {"cached": [], "recompute": []}
    for _ in range(args.repeats):
        for mode in ("recompute", "cached"):
            times[mode].append(timed(lambda: epoch(mode)))
    for mode, values in times.items():
        print(f"{mode:>9} epoch: {spread(values)}")
    bound = flop_bound(backbone, split, start)
    print(f"FLOP bound on the ratio, (prefix + 3 x top) / (3 x top): {bound:.2f}x")
    name = args.model.split(":")[-1]
    row = summary_row(f"fine-tuning epoch, {name} 64x64, --unfreeze 1: cached activations vs recomputing the frozen part",
                      times["recompute"], times["cached"], ">= 3x")
    print(f"cached split-point activations are {row['result']} faster per epoch (target >= 3x)")
    print(f"filling the cache once: {fill_s:.2f}s ({stored.vectors.nbytes / 1e6:.1f} MB of float16 activations)")
    path = save(f"finetune-{name}", {
        "setup": {"model": f"{args.model} (random weights)", "input": f"{SIZE}x{SIZE}", "images": args.images,
                  "unfreeze": 1, "trained_blocks": [n for n, _ in split.blocks[start:]], "batch_size": 64,
                  "threads": args.threads, "activation_shape": encoder.shape},
        "seconds": {mode: values for mode, values in times.items()},
        "median_s": {mode: statistics.median(values) for mode, values in times.items()},
        "cache_fill_s": fill_s,
        "flop_bound": bound,
        "summary": [row, fact_row(f"fine-tuning cache fill, {name}, {args.images} images (one pass of the frozen part)",
                                  f"{fill_s:.2f}s", "once per dataset"),
                    fact_row(f"fine-tuning epoch, {name}: FLOP bound on that ratio", f"{bound:.2f}x", "")],
    })
    print(f"saved {path}")


if __name__ == "__main__":
    main()
