"""Model-only throughput: items per second by batch size, precision, memory format and compile.

Inputs are synthetic but shaped by the model's own preprocessing (random images through its
transform; fixed-length synthetic sentences through its tokenizer), or a real dataset's first items. Each grid point is warmed up,
then timed over ``iters`` steps, ``repeats`` times, with device synchronisation (CUDA events on a
GPU); the median step time is reported with its min and max. On CUDA an out-of-memory batch is
reported in the row's ``error`` column and the grid goes on. Column names follow timm's benchmark
CSVs where they overlap.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

from hubtune.backbone import Backbone, LoadOptions

COLUMNS = ("model", "batch_size", "precision", "channels_last", "compile", "items_per_s", "ms_per_step",
           "ms_per_step_min", "ms_per_step_max", "param_count_m", "gmacs", "error")


@dataclass
class BenchRow:
    model: str
    batch_size: int
    precision: str
    channels_last: bool
    compile: bool
    items_per_s: float | None
    ms_per_step: float | None
    ms_per_step_min: float | None
    ms_per_step_max: float | None
    param_count_m: float
    gmacs: float | None  # multiply-accumulates per item, from torch's FLOP counter
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def synthetic_items(backbone: Backbone, count: int, seed: int = 0) -> list[Any]:
    """Inputs the model's own preprocessing accepts: random images, or ~30-word sentences."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    if backbone.modality == "text":
        words = ["model", "cache", "vector", "frozen", "head", "train", "index", "search", "image", "text"]
        return [" ".join(rng.choice(words, 30)) for _ in range(count)]
    return [Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)) for _ in range(count)]


def data_items(data: Any, count: int) -> list[Any]:
    """The first ``count`` readable raw inputs of a dataset (cycled when it has fewer)."""
    from hubtune.data import open_dataset
    from hubtune.errors import HubtuneError

    raws = []
    for item in open_dataset(data).items():
        try:
            raws.append(item.raw())
        except OSError:
            continue
        if len(raws) == count:
            break
    if not raws:
        raise HubtuneError(f"{data} has no readable items to benchmark with")
    return [raws[i % len(raws)] for i in range(count)]


def gmacs_per_item(backbone: Backbone) -> float | None:
    """Multiply-accumulates of one forward pass per item (FLOPs / 2), or None if not countable."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    batch = backbone.to_device(backbone.preprocessor.collate([backbone.preprocessor(synthetic_items(backbone, 1)[0])]))
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            backbone.forward(batch)
        return round(counter.get_total_flops() / 2 / 1e9, 4)
    except Exception:  # exotic ops the counter does not know: report nothing rather than a wrong number
        return None


def _timer(device: Any) -> Callable[[Callable[[], Any]], float]:
    """Seconds for one call, synchronised with the device (CUDA events on a GPU)."""
    import torch

    if device.type == "cuda":
        def cuda_time(step: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(end) / 1000
        return cuda_time

    def cpu_time(step: Callable[[], Any]) -> float:
        started = time.perf_counter()
        step()
        return time.perf_counter() - started
    return cpu_time


def time_point(backbone: Backbone, batch_size: int, warmup: int, iters: int, repeats: int,
               data: Any = None) -> list[float]:
    """Median seconds per step of each repeat, for one grid point (synthetic inputs unless ``data``)."""
    raws = data_items(data, batch_size) if data is not None else synthetic_items(backbone, batch_size)
    samples = [backbone.preprocessor(item) for item in raws]
    batch = backbone.to_device(backbone.preprocessor.collate(samples))
    measure = _timer(backbone.device)
    for _ in range(warmup):
        backbone.forward_on_device(batch)
    medians = []
    for _ in range(repeats):
        medians.append(statistics.median(measure(lambda: backbone.forward_on_device(batch)) for _ in range(iters)))
    return medians


def run_grid(
    ref: str, options: LoadOptions, batch_sizes: Sequence[int], precisions: Sequence[str],
    channels_last: Sequence[bool] = (True,), compile: Sequence[bool] = (False,), warmup: int = 3, iters: int = 10,
    repeats: int = 3, load: Callable[..., Backbone] | None = None, data: Any = None,
) -> list[BenchRow]:
    """One row per grid point; a CUDA out-of-memory point is reported and skipped."""
    import torch

    if load is None:
        from hubtune.api import load_backbone as load
    rows = []
    for precision in precisions:
        for memory_format in channels_last:
            for compiled in compile:
                backbone = load(ref, replace(options, precision=precision))
                if not memory_format and backbone.channels_last:
                    backbone.channels_last = False
                    backbone.model = backbone.model.to(memory_format=torch.contiguous_format)
                gmacs = gmacs_per_item(backbone)
                if compiled:
                    backbone.compile()
                params = round(sum(p.numel() for p in backbone.model.parameters()) / 1e6, 3)
                for batch_size in batch_sizes:
                    row = BenchRow(str(backbone.ref), batch_size, backbone.precision, backbone.channels_last,
                                   compiled, None, None, None, None, params, gmacs)
                    try:
                        steps = time_point(backbone, batch_size, warmup, iters, repeats, data)
                    except torch.cuda.OutOfMemoryError:
                        torch.cuda.empty_cache()
                        row.error = "out of memory"
                        rows.append(row)
                        continue
                    median = statistics.median(steps)
                    row.items_per_s = round(batch_size / median, 2)
                    row.ms_per_step = round(median * 1000, 3)
                    row.ms_per_step_min = round(min(steps) * 1000, 3)
                    row.ms_per_step_max = round(max(steps) * 1000, 3)
                    rows.append(row)
    return rows


def write_csv(rows: Sequence[BenchRow], path: Any) -> None:
    import csv

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow(row.as_dict())


def plot(rows: Sequence[BenchRow], path: Any) -> None:
    """Items/s against batch size, one line per precision (and memory format / compile, when varied)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varied = {name: len({getattr(row, name) for row in rows}) > 1 for name in ("channels_last", "compile")}
    lines: dict[str, list[BenchRow]] = {}
    for row in rows:
        if row.items_per_s is None:
            continue
        label = row.precision + "".join(f", {name}={getattr(row, name)}" for name, on in varied.items() if on)
        lines.setdefault(label, []).append(row)
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, points in lines.items():
        points.sort(key=lambda row: row.batch_size)
        axes.plot([r.batch_size for r in points], [r.items_per_s for r in points], marker="o", label=label)
    axes.set_xscale("log", base=2)
    axes.set_xlabel("batch size")
    axes.set_ylabel("items / s")
    axes.set_title(rows[0].model if rows else "hubtune bench")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
