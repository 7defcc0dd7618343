"""``extract --dim N``: Matryoshka vectors cut from the full-size ones, never recomputed.

A truncated vector is the first N dimensions of the model's full output (as sentence-transformers'
``truncate_dim``: after the model's own normalisation, not renormalised). So the run extracts the
full-size vectors through the ordinary path (whatever is cached at full size is reused), then
stores the first N dimensions of each under the ``dim`` fingerprint: a later ``--dim M`` over the
same data loads no model at all.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

from hubtune.errors import BackboneOptionError, option
from hubtune.extract.options import ExtractOptions, ExtractSummary
from hubtune.fingerprint import compute_fingerprint
from hubtune.store import EmbeddingStore
from hubtune.store.requests import request_record

if TYPE_CHECKING:
    from hubtune.data import Dataset

#: rows copied per store transaction
CHUNK = 4096


def extract_truncated(ref: str, dataset: "Dataset", store: EmbeddingStore, run: ExtractOptions,
                      shard: tuple[int, int] | None) -> ExtractSummary:
    """Extract at full size, then store the first ``run.options.dim`` dimensions of each vector."""
    from hubtune.extract.run import extract, manifest_of, pending_items

    started = time.perf_counter()
    options, dtype = run.options, run.stored_dtype
    dim = options.dim
    assert dim is not None
    request = request_record(ref, options, dtype)
    items = dataset.items()[shard[0] : shard[1]] if shard is not None else dataset.items()
    unique = list({item.key: item for item in items}.values())
    remembered = None if run.refresh else store.recall_request(request)
    if remembered is not None and not pending_items(store, remembered, unique):
        fingerprint, computed = remembered, 0
    else:
        full = extract(ref, dataset, store, replace(run, options=replace(options, dim=None)), shard=shard)
        fingerprint, computed = _cut(store, full.fingerprint, dim, dtype, unique), full.computed
        store.remember_request(request, fingerprint)
    if shard is None:
        store.put_manifest(dataset.name(run.dataset_name), manifest_of(dataset.items()))
    errors = store.errors(fingerprint)
    failed = sum(1 for item in items if item.key in errors)
    return ExtractSummary(
        dataset=dataset.name(run.dataset_name), fingerprint=fingerprint, total=len(items), computed=computed,
        cached=len(items) - computed - failed, failed=failed, seconds=round(time.perf_counter() - started, 3),
        items_per_s=0.0 if not computed else round(computed / max(time.perf_counter() - started, 1e-9), 1),
    )


def _cut(store: EmbeddingStore, full: str | None, dim: int, dtype: str, items: list) -> str:
    """Register the ``dim`` fingerprint beside ``full`` and copy the first ``dim`` columns of the
    items' full vectors (and their error records) into it; returns the ``dim`` fingerprint."""
    import numpy as np

    from hubtune.extract.run import pending_items

    if full is None:
        raise BackboneOptionError(f"{option('dim')}: the full-size extraction produced no fingerprint")
    record = store.fingerprints()[full]
    if dim > record["dim"]:
        raise BackboneOptionError(f"{option('dim', dim)}: the model makes {record['dim']}-d vectors; give 1..{record['dim']}")
    if dim == record["dim"]:
        return full  # nothing to cut: the full vectors are the answer (as Backbone.select_dim decides)
    fields = {**record["fields"], "dim": dim}
    fingerprint = compute_fingerprint(fields)
    store.register(fingerprint, fields, dim, dtype)
    todo = pending_items(store, fingerprint, items)
    full_errors = store.errors(full)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start : start + CHUNK]
        have = store.has(full, [item.key for item in chunk])
        keys = [item.key for item, ok in zip(chunk, have) if ok]
        vectors = store.get(full, keys, dtype)[:, :dim].copy() if keys else np.zeros((0, dim), dtype)
        errors = {item.key: full_errors[item.key] for item, ok in zip(chunk, have)
                  if not ok and item.key in full_errors}
        store.put_batch(fingerprint, keys, vectors, errors)
    return fingerprint
