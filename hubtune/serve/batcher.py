"""An asyncio micro-batcher: concurrent requests coalesced into model batches, with a bounded queue.

A request is a :class:`Job` (a batch key saying which model call it joins, and its inputs). The
collector takes the first waiting job, then waits up to ``max_wait_ms`` for more until the batch holds
``max_batch_size`` inputs; the jobs are grouped by key and each group is one call of ``run`` in a
single worker thread, so the event loop keeps answering (``/healthz``, new requests, 503s) while the
model computes, and the model is never called from two threads at once.

Accepted means never lost: a job in the queue gets its own answer or its own error. When a grouped
call fails, each of its jobs is run again on its own, so one bad input fails only its own request.
A full queue refuses at once (:class:`~hubtune.errors.Overloaded`, HTTP 503 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

from hubtune.errors import Overloaded, ServeTimeout

#: ``run(key, [inputs of each job]) -> [result or exception, one per job]``
BatchRun = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


@dataclass
class Job:
    key: Hashable
    inputs: Any
    size: int  # inputs it counts for against max_batch_size
    future: "asyncio.Future[Any]"
    queued: float = field(default_factory=time.monotonic)
    batch_size: int = 0  # inputs in the model call it joined (for the access log)


class Batcher:
    """Coalesces jobs into calls of ``run``; start it inside the event loop that serves the requests."""

    def __init__(self, run: BatchRun, max_batch_size: int = 128, max_wait_ms: float = 5.0, max_queue: int = 256,
                 thread_setup: Callable[[], None] | None = None):
        if max_batch_size < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size and max_queue must be >= 1, max_wait_ms >= 0")
        self.run = run
        self.thread_setup = thread_setup  # run first in the worker thread (per-thread settings: torch's threads)
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.queue: asyncio.Queue[Job] | None = None
        self.executor: ThreadPoolExecutor | None = None
        self.task: asyncio.Task[None] | None = None
        self.batch_seconds = 0.1  # running mean of a model call, for Retry-After
        self.batches = 0

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubtune-model",
                                           initializer=self.thread_setup)
        self.task = asyncio.get_running_loop().create_task(self.collect())

    async def stop(self) -> None:
        """Finish what was accepted, then stop."""
        if self.task is None or self.queue is None:
            return
        while not self.queue.empty() and not self.task.done():
            await asyncio.sleep(0.01)
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        if self.executor is not None:
            self.executor.shutdown(wait=True)

    @property
    def waiting(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    def retry_after(self) -> int:
        """Seconds until the queue has room: the batches ahead times the mean batch time."""
        ahead = self.waiting / max(1, self.max_batch_size)
        return max(1, math.ceil((ahead + 1) * self.batch_seconds))

    async def submit(self, key: Hashable, inputs: Any, size: int, timeout: float | None = None) -> tuple[Any, int]:
        """``(result, batch size)`` for one job; raises Overloaded at once when the queue is full, the
        job's own error, or ServeTimeout past ``timeout`` (a job not started by then is dropped)."""
        if self.queue is None:
            raise RuntimeError("the batcher is not started")
        if self.queue.qsize() >= self.max_queue:
            raise Overloaded(f"requests waiting for the model: {self.queue.qsize()} (the queue holds "
                             f"{self.max_queue}, --max-queue); retry after {self.retry_after()} s",
                             self.retry_after())
        job = Job(key, inputs, max(1, size), asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)
        try:
            result = await asyncio.wait_for(asyncio.shield(job.future), timeout)
        except asyncio.TimeoutError:
            job.future.cancel()  # skipped if it has not started; its result is dropped if it has
            raise ServeTimeout(f"no answer within {timeout:g} s (--request-timeout); the service is busy "
                               "or the inputs are too many for one request (a batch already running "
                               "finishes first: send fewer inputs rather than the same again)") from None
        return result, job.batch_size

    async def next_batch(self) -> list[Job]:
        """The first waiting job, and those that arrive within ``max_wait`` up to ``max_batch_size`` inputs."""
        assert self.queue is not None
        batch = [await self.queue.get()]
        size = batch[0].size
        deadline = time.monotonic() + self.max_wait
        while size < self.max_batch_size:
            if self.queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            else:
                job = self.queue.get_nowait()
            batch.append(job)
            size += job.size
        return [job for job in batch if not job.future.cancelled()]

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self.next_batch()
            groups: dict[Hashable, list[Job]] = {}
            for job in batch:
                groups.setdefault(job.key, []).append(job)
            for key, jobs in groups.items():
                started = time.monotonic()
                results = await loop.run_in_executor(self.executor, self.call, key, jobs)
                self.batches += 1
                self.batch_seconds = 0.8 * self.batch_seconds + 0.2 * (time.monotonic() - started)
                for job, result in zip(jobs, results):
                    if job.future.done():  # timed out meanwhile
                        continue
                    if isinstance(result, BaseException):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)

    def call(self, key: Hashable, jobs: list[Job]) -> list[Any]:
        """One model call for ``jobs`` (in the worker thread); on failure, each job again on its own."""
        total = sum(job.size for job in jobs)
        for job in jobs:
            job.batch_size = total
        try:
            results = list(self.run(key, [job.inputs for job in jobs]))
            if len(results) != len(jobs):
                raise RuntimeError(f"the batch call gave {len(results)} results for {len(jobs)} requests")
            return results
        except Exception as error:
            if len(jobs) == 1:
                return [error]
        results = []
        for job in jobs:  # isolate the request that failed the batch
            job.batch_size = job.size
            try:
                results.extend(self.run(key, [job.inputs]))
            except Exception as error:
                results.append(error)
        return results
