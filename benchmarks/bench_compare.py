"""`hubtune.compare` of 3 models vs doing its work by hand, and a rerun over cached vectors.

- overhead: `hubtune.compare([3 models], DATA)` into a fresh store vs, for each model, the calls a user
  would make in-process: `hubtune.extract.extract` into a fresh store, then `train_head` for `knn` and
  `linear` on the same training rows, scored on the same held-out rows (target: compare <= 10 % slower);
- a second `compare` over the cached vectors (no extraction; per model a load, a timed pass of 32 items
  for items/s, and both heads fitted again) vs the first (target: < 10 % of the first's time).

Data: JPEGs (320 x 240, three classes told apart by colour, with noise) in class folders, no `test` split,
so compare scores a stratified 20 % hold-out. Models (default): timm resnet18, efficientnet_b0 and
vit_tiny_patch16_224 with random weights (no download), fp32, CPU, `--workers` as the CLI's auto.
Each repeat runs both sides into fresh stores, in alternating order, then the cached rerun. Both wall
and CPU time are reported (CPU: this process plus its reaped DataLoader workers), since on a shared
machine the wall time moves with the neighbours' load.

Usage: python benchmarks/bench_compare.py [--images 480] [--repeats 3] [--models timm:resnet50,...] [--tag large]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fact_row, save, spread, summary_row  # noqa: E402

MODELS = ["timm:resnet18", "timm:efficientnet_b0", "timm:vit_tiny_patch16_224"]
OPTIONS = {"weights": "random", "precision": "fp32", "device": "cpu"}


def jpeg_folder(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` 320 x 240 JPEGs in three class folders, each leaning to one colour channel, with noise."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 160, 320, dtype=np.float32)[None, :, None]
    for i in range(count):
        label = i % 3
        folder = root / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = ramp * rng.uniform(0.2, 1.0, (1, 1, 3)) + rng.normal(0, 40, (240, 320, 3))
        pixels[..., label] += 30
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def by_hand(models: list[str], data: Path, cache: Path, workers: int) -> dict[str, dict[str, float]]:
    """What compare does, as separate public calls: extract each model, fit both heads, score them."""
    import numpy as np

    from hubtune.backbone import LoadOptions
    from hubtune.compare import evaluation_split
    from hubtune.data import open_dataset
    from hubtune.extract import ExtractOptions, extract
    from hubtune.heads.training import train_head
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import DatasetVectors, load_dataset_vectors

    dataset = open_dataset(data)
    items = dataset.items()
    held = {items[i].origin for i in evaluation_split(items).scored}
    scores: dict[str, dict[str, float]] = {}
    with EmbeddingStore(cache) as store:
        for ref in models:
            summary = extract(ref, dataset, store, ExtractOptions(options=LoadOptions(**OPTIONS), workers=workers,
                                                                  progress=False))
            vectors = load_dataset_vectors(store, summary.fingerprint, summary.dataset)
            test = [r for r, origin in enumerate(vectors.origins) if origin in held]
            train = [r for r in range(len(vectors.origins)) if r not in set(test)]
            subset = DatasetVectors(vectors.vectors[train], [vectors.keys[r] for r in train],
                                    [vectors.labels[r] for r in train], [vectors.splits[r] for r in train],
                                    [vectors.origins[r] for r in train], 0)
            model = {"ref": ref, "fingerprint": summary.fingerprint}
            scores[ref] = {"items_per_s": summary.items_per_s}
            for kind in ("knn", "linear"):
                head = train_head(subset, kind, model)
                y = np.array([head.classes.index(vectors.labels[r]) for r in test])
                scores[ref][kind] = float((head.probabilities(vectors.vectors[test]).argmax(1) == y).mean())
    return scores


class Clock:
    """Wall seconds and CPU seconds (this process and the DataLoader workers it reaped) of a block: on a
    shared machine the CPU time is the steadier measure of the work done."""

    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), _cpu()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu() - self.cpu


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of model references")
    parser.add_argument("--tag", default="", help="results go to results/compare[-TAG]-<machine>-<date>.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import hubtune

    models = args.models.split(",")
    workers = max(1, min(8, (os.cpu_count() or 2) // 2))  # the CLI's --workers auto for images
    work = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    data = jpeg_folder(work / "colours", args.images)
    warm = jpeg_folder(work / "warm", 12, seed=1)  # imports and one-time set-up, untimed
    hubtune.compare(models, warm, cache=work / "warm-cache", workers=workers, progress=False, **OPTIONS)

    seconds: dict[str, dict[str, list[float]]] = {side: {"wall": [], "cpu": []} for side in ("compare", "by_hand", "cached")}
    runs: list[dict[str, Any]] = []

    def record(side: str, clock: Clock) -> None:
        seconds[side]["wall"].append(clock.wall)
        seconds[side]["cpu"].append(clock.cpu)

    for repeat in range(args.repeats):
        first: list[dict[str, Any]] = []
        scores: dict[str, dict[str, float]] = {}
        for side in (("compare", "by_hand") if repeat % 2 == 0 else ("by_hand", "compare")):
            with Clock() as clock:
                if side == "compare":
                    first = hubtune.compare(models, data, cache=work / f"compare-{repeat}", workers=workers,
                                            progress=False, **OPTIONS)
                else:
                    scores = by_hand(models, data, work / f"hand-{repeat}", workers)
            record(side, clock)
        with Clock() as clock:
            again = hubtune.compare(models, data, cache=work / f"compare-{repeat}", workers=workers, progress=False,
                                    **OPTIONS)
        record("cached", clock)
        same = all(row["knn_accuracy"] == scores[row["ref"]]["knn"] and row["linear_accuracy"] == scores[row["ref"]]["linear"]
                   for row in first)
        assert all(row["computed"] == 0 for row in again), "the cached rerun computed vectors"
        print(f"repeat {repeat}: " + "; ".join(f"{side} {v['wall'][-1]:.1f}s wall, {v['cpu'][-1]:.1f}s CPU"
                                               for side, v in seconds.items())
              + f"; same accuracies as by hand: {same}; load average {os.getloadavg()[0]:.1f}", flush=True)
        print("  extract items/s, compare: " + ", ".join(f"{row['ref']} {row['items_per_s']}" for row in first)
              + "; by hand: " + ", ".join(f"{ref} {s['items_per_s']}" for ref, s in scores.items()), flush=True)
        runs.append({"compare": first, "cached": again, "by_hand": scores, "same_accuracies": same,
                     "load_average": os.getloadavg()[0]})

    for side, values in seconds.items():
        print(f"{side}: wall {spread(values['wall'])}; CPU {spread(values['cpu'])}")
    ratios = {}
    for clock in ("cpu", "wall"):
        ratios[clock] = {
            "overhead": statistics.median(seconds["compare"][clock]) / statistics.median(seconds["by_hand"][clock]) - 1,
            "cached_share": statistics.median(seconds["cached"][clock]) / statistics.median(seconds["compare"][clock]),
        }
        print(f"{clock}: compare overhead over extract + heads by hand {ratios[clock]['overhead']:+.1%} (target <= 10 %); "
              f"cached rerun / first compare {ratios[clock]['cached_share']:.1%} (target < 10 %)")
    for row in runs[-1]["compare"]:
        print(f"  {row['ref']}: linear {row['linear_accuracy']:.3f}, knn {row['knn_accuracy']:.3f}, "
              f"{row['items_per_s']} items/s, dim {row['dim']}, {row['params_m']} M params, pareto {row['pareto']}")
    label = f"{len(models)} models ({', '.join(m.split(':')[-1] for m in models)}; random weights), {args.images} JPEGs"
    summary = []
    for clock in ("cpu", "wall"):
        summary += [
            summary_row(f"compare of {label} vs extract + knn/linear heads by hand, {clock} time",
                        seconds["by_hand"][clock], seconds["compare"][clock], ">= 0.91 (overhead <= 10 %)"),
            summary_row(f"compare rerun over cached vectors (timed pass + heads again) vs the first compare, {clock} time",
                        seconds["compare"][clock], seconds["cached"][clock], ">= 10 (< 10 % of the first)"),
        ]
    summary.append(fact_row("compare accuracies equal to the heads fitted by hand",
                            f"{sum(run['same_accuracies'] for run in runs)} of {len(runs)} repeats", "all"))
    print(f"saved {save('compare' + (f'-{args.tag}' if args.tag else ''), {'models': models, 'images': args.images, 'workers': workers, 'seconds': seconds, 'ratios': ratios, 'runs': runs, 'summary': summary})}")


if __name__ == "__main__":
    main()
