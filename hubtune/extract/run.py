"""The batch extractor: embed a dataset (or one shard of it) into the store, once.

The flow for ``extract(ref, data, store)``:

1. list the dataset's items with their content keys (hashing bytes, not decoding);
2. find the fingerprint: from the store's memo of this exact request when there is one, so a fully
   cached dataset is answered without loading the model;
3. skip every key that already has a vector or an error record; if nothing is left, stop;
4. otherwise load the backbone and stream the rest through a DataLoader whose workers read,
   decode and preprocess; the main process runs the model under inference mode and autocast;
   a writer thread commits each batch to LMDB while the next one computes;
5. record the dataset's manifest (ordered keys, labels, splits, origins) under its name, last, so
   that a killed run never leaves a manifest pointing at missing vectors. A shard run records no
   manifest: whoever drives the shards records it once they are all done.

Items that cannot be read or decoded get an error record with the reason; the rest of their batch
is stored. ``shard=(start, stop)`` restricts the work to a range of the dataset's items, which is
what a distributed engine drives.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from hubtune.backbone import LoadOptions
from hubtune.data import Dataset, DatasetError, Item, open_dataset
from hubtune.errors import HubtuneError, InputError
from hubtune.store import EmbeddingStore
from hubtune.store.requests import request_record

if TYPE_CHECKING:
    from hubtune.backbone import Backbone, Preprocessor


@dataclass
class ExtractSummary:
    """What ``hubtune extract`` reports. ``items_per_s`` is the embedding rate (model loading
    excluded); ``seconds`` is the whole call."""

    dataset: str
    fingerprint: str | None
    total: int
    computed: int
    cached: int
    failed: int
    seconds: float
    items_per_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class TooManyFailures(HubtuneError):
    """More items failed than ``--max-failures`` allows (everything readable was still stored);
    ``summary`` is the run's :class:`ExtractSummary`, for the report a caller still owes (None where
    the caller has reported it already, as the sharded engines' CLI does)."""

    def __init__(self, message: str, summary: "ExtractSummary | None" = None):
        super().__init__(message)
        self.summary = summary


# -- DataLoader pieces (module level: picklable for spawn workers) ----------------------------------
class _ItemDataset:
    """Items -> (position, sample or None, error or None); runs in DataLoader workers."""

    def __init__(self, items: Sequence[Item], preprocessor: "Preprocessor"):
        self.items = items
        self.preprocessor = preprocessor

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        try:
            return index, self.preprocessor(self.items[index].raw()), None
        except InputError as exc:
            return index, None, str(exc)
        except OSError as exc:
            return index, None, f"cannot read: {type(exc).__name__}: {exc}"
        except Exception as exc:  # a preprocessor bug on one odd input must not stop the run
            return index, None, f"preprocessing failed: {type(exc).__name__}: {exc}"


class _Collate:
    def __init__(self, preprocessor: "Preprocessor"):
        self.preprocessor = preprocessor

    def __call__(self, rows: list[tuple[int, Any, str | None]]) -> tuple[list[int], Any, list[tuple[int, str]]]:
        good = [(i, sample) for i, sample, error in rows if error is None]
        bad = [(i, error) for i, _, error in rows if error is not None]
        batch = self.preprocessor.collate([s for _, s in good]) if good else None
        return [i for i, _ in good], batch, bad


class _Writer(threading.Thread):
    """Commits batches to the store while the main thread computes the next one."""

    def __init__(self, store: EmbeddingStore, fingerprint: str):
        super().__init__(name="hubtune-store-writer", daemon=True)
        self.store = store
        self.fingerprint = fingerprint
        self.jobs: queue.Queue = queue.Queue(maxsize=4)
        self.error: BaseException | None = None
        self.written = 0

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if self.error is not None:
                continue
            try:
                keys, vectors, errors = job
                self.written += self.store.put_batch(self.fingerprint, keys, vectors, errors)
            except BaseException as exc:  # surfaced by put() / close()
                self.error = exc

    def put(self, job: tuple) -> None:
        if self.error is not None:
            raise self.error
        self.jobs.put(job)

    def close(self) -> None:
        self.jobs.put(None)
        self.join()
        if self.error is not None:
            raise self.error


def _embed(backbone: "Backbone", batch: dict, limit: list[int]) -> Any:
    """Embed in chunks of ``limit[0]`` rows; on CUDA out-of-memory, halve it and retry."""
    import torch

    rows = len(next(iter(batch.values())))
    outputs = []
    start = 0
    while start < rows:
        size = min(limit[0], rows - start)
        chunk = {key: value[start : start + size] for key, value in batch.items()}
        try:
            outputs.append(backbone.embed_batch(chunk))
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            torch.cuda.empty_cache()
            limit[0] = max(1, size // 2)
            continue
        start += size
    return torch.cat(outputs)


def cpu_streams(backbone: "Backbone") -> int:
    """How many forwards ``extract`` runs at once by default: 2 on a CPU with 2+ threads, else 1.

    Each stream gets half the threads: an op's small matrices keep one thread busier than two. On 2
    cores this moved ``benchmarks/run_all``'s text row from 0.97x to 1.17x of ``encode`` and its image
    row from 1.25x to 1.54x of a plain timm loop. On CUDA the device is the bottleneck and one stream
    feeds it.
    """
    import torch

    return 2 if backbone.device.type == "cpu" and torch.get_num_threads() >= 2 else 1


def _embedded(backbone: "Backbone", batches: Iterator, limit: list[int], streams: int) -> Iterator:
    """``(positions, vectors or None, bad)`` per batch, in order, ``streams`` forwards at a time."""
    if streams <= 1:
        for positions, batch, bad in batches:
            yield positions, _embed(backbone, batch, limit) if batch else None, bad
        return
    import torch
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, torch.get_num_threads() // streams)
    with ThreadPoolExecutor(streams, thread_name_prefix="hubtune-stream", initializer=torch.set_num_threads,
                            initargs=(threads,)) as pool:
        running: deque = deque()
        for positions, batch, bad in batches:
            running.append((positions, pool.submit(_embed, backbone, batch, limit) if batch else None, bad))
            while len(running) > streams:
                positions, future, bad = running.popleft()
                yield positions, future.result() if future else None, bad
        for positions, future, bad in running:
            yield positions, future.result() if future else None, bad


def _loader_batches(backbone: "Backbone", todo: list[Item], batch_size: int, workers: int) -> Iterator:
    """Batches from a DataLoader whose worker processes read, decode and preprocess."""
    from torch.utils.data import DataLoader

    if backbone.modality == "text":  # similar lengths together: less padding; the store is keyed
        order = sorted(range(len(todo)), key=lambda i: -len(todo[i].text or ""))
        todo = [todo[i] for i in order]
    else:
        order = list(range(len(todo)))
    loader = DataLoader(
        _ItemDataset(todo, backbone.preprocessor), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_Collate(backbone.preprocessor), pin_memory=backbone.device.type == "cuda", prefetch_factor=4,
    )
    started = iter(loader)  # forks the workers now, before the caller starts its writer thread
    return (
        ([order[i] for i in positions], batch, [(order[i], reason) for i, reason in bad])
        for positions, batch, bad in started
    )


def _raw(item: Item) -> Any:
    try:
        return item.raw()
    except OSError as exc:
        return InputError(f"cannot read: {type(exc).__name__}: {exc}")


def prepare_items(preprocessor: "Preprocessor", items: Sequence[Item]) -> list[Any]:
    """Each item read and preprocessed (batched where the preprocessor can: tokenisers), or its
    :class:`InputError`. Also what the Ray engine's CPU decode actors run on a shard."""
    raws = [_raw(item) for item in items]
    readable = [i for i, raw in enumerate(raws) if not isinstance(raw, InputError)]
    prepared: list[Any] = list(raws)
    for i, sample in zip(readable, preprocessor.prepare_many([raws[i] for i in readable])):
        prepared[i] = sample
    return prepared


def _batches(preprocessor: "Preprocessor", prepared: Sequence[Any], start: int, batch_size: int) -> Iterator:
    """``(positions, collated batch, [(position, reason)])`` over prepared samples; when the
    preprocessor knows sample lengths, batches hold samples of similar length (less padding)."""
    bad = [(start + i, str(p)) for i, p in enumerate(prepared) if isinstance(p, InputError)]
    good = [i for i, p in enumerate(prepared) if not isinstance(p, InputError)]
    lengths = {i: preprocessor.length(prepared[i]) for i in good}
    if all(length is not None for length in lengths.values()):
        good.sort(key=lambda i: -lengths[i])
    if bad and not good:
        yield [], None, bad
    for offset in range(0, len(good), batch_size):
        chunk = good[offset : offset + batch_size]
        yield [start + i for i in chunk], preprocessor.collate([prepared[i] for i in chunk]), bad if offset == 0 else []


def _windowed_batches(preprocessor: "Preprocessor", todo: list[Item], batch_size: int, window: int) -> Iterator:
    """In-process batches: preprocess a window of items at once (batched tokenising), then batch it."""
    for start in range(0, len(todo), window):
        yield from _batches(preprocessor, prepare_items(preprocessor, todo[start : start + window]), start, batch_size)


def _check_modality(dataset: Dataset, backbone: "Backbone") -> None:
    """Refuse a text model on images or an image model on texts before a single item fails.

    Folders (by their files' suffixes) and ``text`` tables are known; a table's ``path`` column may
    name either kind of file, so its items are left to the preprocessor."""
    known = dataset.location.is_dir() or dataset.modality == "text"
    if known and dataset.modality != backbone.modality:
        def a(modality: str) -> str:
            return f"an {modality}" if modality == "image" else f"a {modality}"

        raise DatasetError(
            f"{dataset.location} holds {dataset.modality}s but {backbone.ref} is {a(backbone.modality)} model; "
            f"pick {a(backbone.modality)} dataset or {a(dataset.modality)} model (see `hubtune models`)"
        )


def _pending(store: EmbeddingStore, fingerprint: str, items: list[Item]) -> list[Item]:
    """Items with neither a vector nor an error record under ``fingerprint``."""
    present = store.has(fingerprint, (item.key for item in items))
    failed = store.errors(fingerprint)
    return [item for item, has in zip(items, present) if not has and item.key not in failed]


def _manifest(items: Sequence[Item]) -> dict[str, list]:
    return {
        "keys": [item.key.hex() for item in items],
        "labels": [item.label for item in items],
        "splits": [item.split for item in items],
        "origins": [item.origin for item in items],
    }


def _progress(total: int, enabled: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]extract"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} items/s"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not enabled, transient=False,
    )


def extract(
    ref: str,
    data: str | Path | Dataset,
    store: EmbeddingStore,
    *,
    dataset_name: str | None = None,
    options: LoadOptions | None = None,
    batch_size: int = 64,
    workers: int = 0,
    stored_dtype: str = "float16",
    shard: tuple[int, int] | None = None,
    max_failures: float | None = None,
    refresh: bool = False,
    compile: bool = False,
    progress: bool = True,
    backbone: "Backbone | None" = None,
    prepared: "Mapping[bytes, Any] | None" = None,
    streams: int | None = None,
) -> ExtractSummary:
    """Embed ``data`` with ``ref`` into ``store``; see the module docstring for the flow.

    ``prepared`` maps item keys to samples already read and preprocessed elsewhere (a sample, or
    the item's :class:`InputError`), as the Ray engine's CPU decode actors hand them over; the
    extractor then only batches them and runs the model. ``streams``: forwards run at once
    (None: :func:`cpu_streams`).
    """
    started = time.perf_counter()
    options = options or LoadOptions()
    dataset = data if isinstance(data, Dataset) else open_dataset(data)
    name = dataset.name(dataset_name)
    all_items = dataset.items()
    items = all_items[shard[0] : shard[1]] if shard is not None else all_items
    request = request_record(ref, options, stored_dtype)
    fingerprint = None if refresh or backbone is not None else store.recall_request(request)
    unique: dict[bytes, Item] = {}
    for item in items:
        unique.setdefault(item.key, item)
    todo = list(unique.values())
    if fingerprint is not None:
        todo = _pending(store, fingerprint, todo)
    computed, compute_seconds = 0, 0.0
    if todo:
        if backbone is None:
            from hubtune.api import load_backbone

            backbone = load_backbone(ref, options)
        _check_modality(dataset, backbone)
        if compile:
            backbone.compile()
        remembered, fingerprint = fingerprint, backbone.fingerprint(stored_dtype)
        store.register(fingerprint, backbone.fingerprint_fields(stored_dtype), backbone.dim, stored_dtype)
        store.remember_request(request, fingerprint)
        if fingerprint != remembered:  # the memo missed (or was stale): filter against the real one
            todo = _pending(store, fingerprint, todo)
        if todo:
            compute_started = time.perf_counter()
            computed = _run(backbone, todo, store, fingerprint, batch_size, workers, stored_dtype, progress, prepared,
                            streams if streams is not None else cpu_streams(backbone))
            compute_seconds = time.perf_counter() - compute_started
    if shard is None:  # recorded last: a manifest never points at vectors that are not there yet
        store.put_manifest(name, _manifest(all_items))
    errors = store.errors(fingerprint) if fingerprint else {}
    failed = sum(1 for item in items if item.key in errors)
    seconds = time.perf_counter() - started
    summary = ExtractSummary(
        dataset=name, fingerprint=fingerprint, total=len(items), computed=computed,
        cached=len(items) - computed - failed, failed=failed, seconds=round(seconds, 3),
        items_per_s=round(computed / compute_seconds, 1) if compute_seconds > 0 else 0.0,
    )
    if max_failures is not None and items and failed / len(items) > max_failures:
        raise TooManyFailures(
            f"{failed} of {len(items)} items failed ({failed / len(items):.1%}), over --max-failures "
            f"{max_failures:.1%}; see them with `hubtune cache errors`", summary
        )
    return summary


def _run(
    backbone: "Backbone",
    todo: list[Item],
    store: EmbeddingStore,
    fingerprint: str,
    batch_size: int,
    workers: int,
    stored_dtype: str,
    progress: bool,
    prepared: "Mapping[bytes, Any] | None" = None,
    streams: int = 1,
) -> int:
    import numpy as np

    if prepared is not None:
        batches = _batches(backbone.preprocessor, [prepared[item.key] for item in todo], 0, batch_size)
    elif workers:
        batches = _loader_batches(backbone, todo, batch_size, workers)
    else:
        window = batch_size * (64 if backbone.modality == "text" else 1)
        batches = _windowed_batches(backbone.preprocessor, todo, batch_size, window)
    writer = _Writer(store, fingerprint)
    writer.start()
    limit = [batch_size]
    started = time.perf_counter()
    done = 0
    try:
        with _progress(len(todo), progress) as bar:
            task = bar.add_task("extract", total=len(todo), rate="-")
            for positions, embedded, bad in _embedded(backbone, batches, limit, streams):
                keys = [todo[i].key for i in positions]
                vectors = embedded.numpy().astype(stored_dtype) if embedded is not None else None
                errors = {todo[i].key: {"reason": reason, "origin": todo[i].origin} for i, reason in bad}
                writer.put((keys, vectors if vectors is not None else np.zeros((0, 1), stored_dtype), errors))
                done += len(positions) + len(bad)
                rate = done / max(time.perf_counter() - started, 1e-9)
                bar.update(task, completed=done, rate=f"{rate:,.0f}")
    finally:
        writer.close()
    return writer.written
