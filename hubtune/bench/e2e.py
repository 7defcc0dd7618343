"""End-to-end benchmark: the real extractor's items/s, and where its time goes, stage by stage.

Two passes over the same items with one loaded backbone, each into its own scratch store:

1. the real extractor (:func:`hubtune.extract.extract`, the pipelined path a user runs): its
   items/s is the number to quote;
2. a *profiled* pass that runs the same stages one after another on the main thread, synchronising
   the device after each, so every second of the pass belongs to one stage: read (file bytes),
   decode (image bytes -> RGB), preprocess (transform or tokenise, and collate), host-to-device,
   forward, device-to-host, store write. A stage's share is its time over the pass's wall time;
   the shares cover the pass and sum to about 1 (the rest is loop bookkeeping).

Which stage bounds the pipelined run: reading, decoding and preprocessing run in ``workers``
processes beside the main thread (transfers and forward), and a writer thread commits beside both,
so the three groups overlap; the group with the most time per item, the loader group's time divided
by its worker count, is the bound, and its largest stage is named.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from hubtune.data import open_dataset
from hubtune.errors import HubtuneError, InputError

if TYPE_CHECKING:
    from hubtune.backbone import Backbone
    from hubtune.data import Item
    from hubtune.store import EmbeddingStore

STAGES = ("read", "decode", "preprocess", "host_to_device", "forward", "device_to_host", "store_write")
_GROUPS = {"loader": ("read", "decode", "preprocess"), "compute": ("host_to_device", "forward", "device_to_host"),
           "writer": ("store_write",)}


@dataclass
class E2EReport:
    """``shares`` maps each of :data:`STAGES` to its share of the profiled pass's wall time."""

    model: str
    items: int
    failed: int
    batch_size: int
    precision: str
    workers: int
    items_per_s: float  # the real extractor's, model loading excluded
    profiled_items_per_s: float
    shares: dict[str, float]
    bound: str
    bound_group: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Clock:
    """Accumulates seconds per stage; synchronises the device at each stage's end."""

    def __init__(self, device: Any):
        import torch

        self.seconds: dict[str, float] = defaultdict(float)
        self._sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.seconds[stage] += time.perf_counter() - started


def _prepare(backbone: "Backbone", raws: list[Any], clock: _Clock) -> list[Any]:
    """Decode (images) then preprocess; an item that fails becomes its :class:`InputError`."""
    from hubtune.backbone import ImagePreprocessor
    from hubtune.imageio import to_rgb_image

    preprocessor = backbone.preprocessor
    if not isinstance(preprocessor, ImagePreprocessor):  # text and others: one batched step
        with clock("preprocess"):
            return preprocessor.prepare_many(raws)
    out: list[Any] = []
    for raw in raws:
        try:
            with clock("decode"):
                image = to_rgb_image(raw)
            with clock("preprocess"):
                out.append({"pixel_values": preprocessor.transform(image)})
        except InputError as exc:
            out.append(exc)
    return out


def profile_stages(backbone: "Backbone", items: list["Item"], store: "EmbeddingStore", batch_size: int) -> tuple[dict[str, float], float, int]:
    """The serial, synchronised pass: (seconds per stage, wall seconds, failed items)."""
    clock = _Clock(backbone.device)
    fingerprint = backbone.fingerprint()
    store.register(fingerprint, backbone.fingerprint_fields(), backbone.dim, "float16")
    failed = 0
    started = time.perf_counter()
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        with clock("read"):
            raws = [item.raw() for item in chunk]
        prepared = _prepare(backbone, raws, clock)
        good = [(item, sample) for item, sample in zip(chunk, prepared) if not isinstance(sample, InputError)]
        failed += len(chunk) - len(good)
        if not good:
            continue
        with clock("preprocess"):
            batch = backbone.preprocessor.collate([sample for _, sample in good])
        with clock("host_to_device"):
            batch = backbone.to_device(batch)
        with clock("forward"):
            output = backbone.forward_on_device(batch)
        with clock("device_to_host"):
            vectors = output.float().cpu().numpy().astype("float16")
        with clock("store_write"):
            store.put_batch(fingerprint, [item.key for item, _ in good], vectors)
    return dict(clock.seconds), time.perf_counter() - started, failed


def _bound(seconds: dict[str, float], workers: int) -> tuple[str, str]:
    """(stage, group) that limits the pipelined run; see the module docstring."""
    def group_time(group: str) -> float:
        total = sum(seconds.get(stage, 0.0) for stage in _GROUPS[group])
        return total / max(workers, 1) if group == "loader" else total

    group = max(_GROUPS, key=group_time)
    return max(_GROUPS[group], key=lambda stage: seconds.get(stage, 0.0)), group


def run_e2e(backbone: "Backbone", data: str | Path, batch_size: int, workers: int, limit: int | None = None,
            progress: bool = False) -> E2EReport:
    """Run both passes over ``data`` (its first ``limit`` items) and report throughput and shares."""
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore

    dataset = open_dataset(data)
    if dataset.modality != backbone.modality:
        raise HubtuneError(f"{data} holds {dataset.modality} items but {backbone.ref} is a {backbone.modality} model; "
                           f"pass data of the model's kind")
    items = dataset.items()[:limit] if limit else dataset.items()
    if not items:
        raise HubtuneError(f"{data} has no items to benchmark")
    backbone.embed_batch(backbone.preprocessor.collate([backbone.preprocessor(backbone.probe_item())]))  # warm-up
    with tempfile.TemporaryDirectory(prefix="hubtune-bench-e2e-") as scratch:
        with EmbeddingStore(Path(scratch) / "extract") as store:
            summary = extract(str(backbone.ref), dataset, store, batch_size=batch_size, workers=workers, shard=(0, len(items)),
                              backbone=backbone, progress=progress)
        with EmbeddingStore(Path(scratch) / "profiled") as store:
            seconds, wall, failed = profile_stages(backbone, items, store, batch_size)
    bound, group = _bound(seconds, workers)
    done = len(items) - failed
    return E2EReport(
        model=str(backbone.ref), items=len(items), failed=failed, batch_size=batch_size, precision=backbone.precision,
        workers=workers, items_per_s=summary.items_per_s, profiled_items_per_s=round(done / wall, 1),
        shares={stage: round(seconds.get(stage, 0.0) / wall, 4) for stage in STAGES}, bound=bound, bound_group=group,
    )
