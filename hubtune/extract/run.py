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

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hubtune.backbone import LoadOptions
from hubtune.data import Dataset, Item, open_dataset
from hubtune.errors import DatasetError, TooManyFailures, TowerError
from hubtune.extract.options import ExtractOptions, ExtractSummary
from hubtune.extract.batches import loader_batches, prepared_batches, windowed_batches
from hubtune.extract.streams import StoreWriter, cpu_streams, embedded_batches
from hubtune.store import EmbeddingStore
from hubtune.store.requests import request_record

if TYPE_CHECKING:
    from hubtune.backbone import Backbone


def known_modality(dataset: Dataset) -> str | None:
    """What a dataset holds, where that is known before reading it: folders (by their files'
    suffixes) and ``text`` tables; a table's ``path`` column may name either kind of file."""
    return dataset.modality if dataset.location.is_dir() or dataset.modality == "text" else None


def _modality_error(dataset: Dataset, ref: Any, modality: str) -> DatasetError:
    def a(kind: str) -> str:
        return f"an {kind}" if kind == "image" else f"a {kind}"

    return DatasetError(
        f"{dataset.location} holds {dataset.modality}s but {ref} is {a(modality)} model; "
        f"pick {a(modality)} dataset or {a(dataset.modality)} model (see `hubtune models`)"
    )


def _load_for(ref: str, dataset: Dataset, options: LoadOptions) -> "Backbone":
    """The backbone for ``dataset``: a two-tower model embeds it with the tower of its kind, and a
    model of the other kind is refused before a single item fails."""
    from hubtune.api import load_backbone

    try:
        return load_backbone(ref, options)
    except TowerError as exc:
        raise _modality_error(dataset, ref, exc.modality) from exc


def _check_modality(dataset: Dataset, backbone: "Backbone") -> None:
    """Refuse a backbone handed in (not loaded here) whose kind is not the dataset's."""
    if known_modality(dataset) not in (None, backbone.modality):
        raise _modality_error(dataset, backbone.ref, backbone.modality)


def pending_items(store: EmbeddingStore, fingerprint: str, items: list[Item]) -> list[Item]:
    """Items with neither a vector nor an error record under ``fingerprint``."""
    present = store.has(fingerprint, (item.key for item in items))
    failed = store.errors(fingerprint)
    return [item for item, has in zip(items, present) if not has and item.key not in failed]


def manifest_of(items: Sequence[Item]) -> dict[str, list]:
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
    run: ExtractOptions | None = None,
    *,
    shard: tuple[int, int] | None = None,
    backbone: "Backbone | None" = None,
    prepared: "Mapping[bytes, Any] | None" = None,
    **settings: Any,
) -> ExtractSummary:
    """Embed ``data`` with ``ref`` into ``store``; see the module docstring for the flow.

    ``run`` holds the run's settings (:class:`ExtractOptions`); keyword ``settings`` override its
    fields (``options=``, ``batch_size=``, ...). ``shard`` restricts the run to a range of items;
    ``backbone`` replaces loading ``ref``; ``prepared`` maps item keys to samples already read and
    preprocessed elsewhere (a sample, or the item's :class:`InputError`), as the Ray engine's CPU
    decode actors hand them over; the extractor then only batches them and runs the model.
    """
    run = replace(run or ExtractOptions(), **settings)
    options, stored_dtype = run.options or LoadOptions(), run.stored_dtype
    started = time.perf_counter()
    dataset = data if isinstance(data, Dataset) else open_dataset(data)
    if options.tower is None and known_modality(dataset) is not None:
        options = replace(options, tower=known_modality(dataset))
        run = replace(run, options=options)
    if options.dim is not None and backbone is None and prepared is None:
        from hubtune.extract.truncate import extract_truncated

        return extract_truncated(ref, dataset, store, run, shard)
    name = dataset.name(run.dataset_name)
    all_items = dataset.items()
    items = all_items[shard[0] : shard[1]] if shard is not None else all_items
    request = request_record(ref, options, stored_dtype)
    fingerprint = None if run.refresh or backbone is not None else store.recall_request(request)
    unique: dict[bytes, Item] = {}
    for item in items:
        unique.setdefault(item.key, item)
    todo = list(unique.values())
    if fingerprint is not None:
        todo = pending_items(store, fingerprint, todo)
    computed, compute_seconds = 0, 0.0
    if todo:
        if backbone is None:
            backbone = _load_for(ref, dataset, options)
        _check_modality(dataset, backbone)
        if run.compile:
            backbone.compile()
        remembered, fingerprint = fingerprint, backbone.fingerprint(stored_dtype)
        store.register(fingerprint, backbone.fingerprint_fields(stored_dtype), backbone.dim, stored_dtype)
        store.remember_request(request, fingerprint)
        if fingerprint != remembered:  # the memo missed (or was stale): filter against the real one
            todo = pending_items(store, fingerprint, todo)
        if todo:
            compute_started = time.perf_counter()
            computed = _run(backbone, todo, store, fingerprint, run.batch_size, run.workers or 0, stored_dtype,
                            run.progress, prepared, run.streams if run.streams is not None else cpu_streams(backbone))
            compute_seconds = time.perf_counter() - compute_started
    if shard is None:  # recorded last: a manifest never points at vectors that are not there yet
        store.put_manifest(name, manifest_of(all_items))
    errors = store.errors(fingerprint) if fingerprint else {}
    failed = sum(1 for item in items if item.key in errors)
    seconds = time.perf_counter() - started
    summary = ExtractSummary(
        dataset=name, fingerprint=fingerprint, total=len(items), computed=computed,
        cached=len(items) - computed - failed, failed=failed, seconds=round(seconds, 3),
        items_per_s=round(computed / compute_seconds, 1) if compute_seconds > 0 else 0.0,
    )
    if run.max_failures is not None and items and failed / len(items) > run.max_failures:
        raise TooManyFailures(
            f"{failed} of {len(items)} items failed ({failed / len(items):.1%}), over --max-failures "
            f"{run.max_failures:.1%}; see them with `hubtune cache errors`", summary
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
        batches = prepared_batches(backbone.preprocessor, [prepared[item.key] for item in todo], 0, batch_size)
    elif workers:
        batches = loader_batches(backbone, todo, batch_size, workers)
    else:
        window = batch_size * (64 if backbone.modality == "text" else 1)
        batches = windowed_batches(backbone.preprocessor, todo, batch_size, window)
    writer = StoreWriter(store, fingerprint)
    writer.start()
    limit = [batch_size]
    started = time.perf_counter()
    done = 0
    try:
        with _progress(len(todo), progress) as bar:
            task = bar.add_task("extract", total=len(todo), rate="-")
            for positions, embedded, bad in embedded_batches(backbone, batches, limit, streams):
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
