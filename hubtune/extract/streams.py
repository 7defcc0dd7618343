"""Running the model: forwards in chunks that shrink on CUDA out-of-memory, several streams at once
on a CPU, and a writer thread that commits each batch to the store while the next one computes."""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING, Any, Iterator

from hubtune.store import EmbeddingStore

if TYPE_CHECKING:
    from hubtune.backbone import Backbone


class StoreWriter(threading.Thread):
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


def embedded_batches(backbone: "Backbone", batches: Iterator, limit: list[int], streams: int) -> Iterator:
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
