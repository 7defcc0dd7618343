"""Concurrency, with numbers: one writer with 4 reader processes and DataLoader workers (fork and
spawn) reading at the same time; two extract jobs on one cache; handles inherited across fork.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import pytest

from hubtune.store import EmbeddingStore, StoreError

FP = "c0" * 16
DIM = 64
BATCH = 64
LOADER_ITEMS = 128  # checked reads per DataLoader (a count, not a duration: no test depends on the machine's speed)


def key(i: int) -> bytes:
    return hashlib.blake2b(str(i).encode(), digest_size=16).digest()


def expected(i: int) -> np.ndarray:
    """The vector the writer stores for key ``i``: a reader can check every one it gets."""
    return np.random.default_rng(i).standard_normal(DIM).astype(np.float16)


def committed(counter: Path) -> int:
    """How many keys the writer has committed (it rewrites this after each commit)."""
    try:
        return int(counter.read_text() or 0)
    except (OSError, ValueError):
        return 0


def check(store: EmbeddingStore, counter: Path, rng: random.Random) -> tuple[int, int, int]:
    """Read up to 64 keys the writer says are committed; (read, missing, torn)."""
    count = committed(counter)
    if not count:
        return 0, 0, 0
    indices = [rng.randrange(count) for _ in range(64)]
    keys = [key(i) for i in indices]
    present = store.has(FP, keys)
    missing = present.count(False)
    if missing == len(keys):
        return 0, missing, 0
    got = store.get(FP, [k for k, p in zip(keys, present) if p], dtype="float16")
    wanted = np.stack([expected(i) for i, p in zip(indices, present) if p])
    torn = int((got.view(np.uint16) != wanted.view(np.uint16)).any(axis=1).sum())
    return len(got), missing, torn


def writer(path: Path, counter: Path, stop: Path) -> None:
    with EmbeddingStore(path) as store:
        done = committed(counter)
        while not stop.exists():
            indices = range(done, done + BATCH)
            store.put_batch(FP, [key(i) for i in indices], np.stack([expected(i) for i in indices]))
            done += BATCH
            counter.write_text(str(done))
            time.sleep(0.01)  # sustained, but leaving the two cores room for the readers


def reader(path: Path, counter: Path, stop: Path, out: Path, seed: int) -> None:
    totals = {"read": 0, "missing": 0, "torn": 0, "errors": 0}
    rng = random.Random(seed)
    with EmbeddingStore(path, readonly=True) as store:
        while not stop.exists() or totals["read"] == 0:  # until told, and not before it has read something
            try:
                read, missing, torn = check(store, counter, rng)
                totals["read"] += read
                totals["missing"] += missing
                totals["torn"] += torn
            except Exception:  # counted, never hidden
                totals["errors"] += 1
            time.sleep(0.005)
    out.write_text(json.dumps(totals))


class CheckedReads:
    """A map-style dataset whose items are checked reads; each worker process opens its own store."""

    def __init__(self, path: Path, counter: Path):
        self.path, self.counter = path, counter
        self.store: EmbeddingStore | None = None
        self.pid = -1

    def __len__(self) -> int:
        return 10**6

    def __getitem__(self, index: int) -> tuple[int, int, int, int]:
        if self.pid != os.getpid():
            self.store, self.pid = EmbeddingStore(self.path, readonly=True), os.getpid()
        try:
            return (*check(self.store, self.counter, random.Random(index)), 0)
        except Exception:
            return 0, 0, 0, 1


def as_list(rows: list) -> list:
    return rows


def _loader_reads(path: Path, counter: Path, context: str, items: int) -> dict:
    """``items`` checked reads (each of up to 64 keys) through a DataLoader's two workers."""
    from torch.utils.data import DataLoader

    loader = DataLoader(CheckedReads(path, counter), batch_size=8, num_workers=2, multiprocessing_context=context,
                        collate_fn=as_list, persistent_workers=False)
    totals = {"read": 0, "missing": 0, "torn": 0, "errors": 0}
    done = 0
    for rows in loader:
        for read, missing, torn, errors in rows:
            totals["read"] += read
            totals["missing"] += missing
            totals["torn"] += torn
            totals["errors"] += errors
        done += len(rows)
        if done >= items:
            break
    return totals


@pytest.mark.slow
def test_one_writer_four_readers_and_dataloader_workers(fork, tmp_path: Path, figure) -> None:
    path, counter, stop = tmp_path / "store", tmp_path / "committed", tmp_path / "stop"
    with EmbeddingStore(path) as store:  # the store exists before the readers open it
        store.put_batch(FP, [key(i) for i in range(BATCH)], np.stack([expected(i) for i in range(BATCH)]))
    counter.write_text(str(BATCH))
    pids = [fork.start(lambda: writer(path, counter, stop))]
    outs = [tmp_path / f"reader{n}.json" for n in range(4)]
    pids += [fork.start(lambda: reader(path, counter, stop, out, n)) for n, out in enumerate(outs)]
    try:
        loaders = {context: _loader_reads(path, counter, context, LOADER_ITEMS) for context in ("fork", "spawn")}
    finally:
        stop.touch()
    assert [fork.wait(pid, 60) for pid in pids] == [0] * len(pids)
    readers = [json.loads(out.read_text()) for out in outs]
    everyone = readers + list(loaders.values())
    total = {name: sum(part[name] for part in everyone) for name in ("read", "missing", "torn", "errors")}
    assert total["errors"] == 0 and total["torn"] == 0 and total["missing"] == 0, (readers, loaders)
    assert all(part["read"] > 0 for part in everyone)
    with EmbeddingStore(path, readonly=True) as store:
        assert store.verify().ok and store.count(FP) == committed(counter)
    figure("concurrency", f"1 writer committed {committed(counter)} vectors while 4 reader processes and DataLoader "
           f"workers (2 fork, 2 spawn) read {total['read']} committed vectors "
           f"(readers {[r['read'] for r in readers]}, fork {loaders['fork']['read']}, spawn {loaders['spawn']['read']}): "
           f"{total['errors']} errors, {total['torn']} torn, {total['missing']} committed-but-unseen")


@pytest.mark.slow
def test_two_extract_jobs_on_one_cache_serialise(fork, make_crash_dataset, tiny_vit_repo: str, tmp_path: Path,
                                                  figure) -> None:
    data, good, bad = make_crash_dataset(tmp_path / "data", good=600, bad=20)
    cache = tmp_path / "cache"

    def job(name: str) -> None:
        from hubtune.cli import main

        main(["extract", f"hf:{tiny_vit_repo}", str(data), "--cache", str(cache), "--dataset", name, "--json",
              "--batch-size", "16", "--workers", "0", "--no-progress", "--device", "cpu", "--precision", "fp32"])

    logs = [tmp_path / f"job{n}.log" for n in range(2)]
    pids = [fork.start(lambda: job(f"job{n}"), stderr_to=log) for n, log in enumerate(logs)]
    assert [fork.wait(pid, 300) for pid in pids] == [0, 0], [log.read_text()[-2000:] for log in logs]
    texts = [log.read_text() for log in logs]
    summaries = [json.loads(text[text.index("{\n"):text.rindex("}") + 1]) for text in texts]
    with EmbeddingStore(cache, readonly=True) as store:
        assert store.verify().ok
        (fingerprint,) = store.fingerprints()
        assert store.count(fingerprint) == len(good) and set(store.errors(fingerprint)) == bad
        assert sorted(store.datasets()) == ["job0", "job1"]
        rows = sum(int.from_bytes(bytes(v)[12:16], "little") for _, v in store._iter_prefix(store._blocks, bytes.fromhex(fingerprint)))
    assert rows == len(good)  # no vector written twice, even by the job that lost the race
    computed = [s["computed"] for s in summaries]
    figure("two extract jobs", f"2 concurrent jobs over {len(good) + len(bad)} items: both exit 0, computed {computed} "
           f"(sum {sum(computed)}), store holds {rows} vectors for {len(good)} unique keys, verify clean")


def test_every_store_method_refuses_a_handle_inherited_across_fork(fork, tmp_path: Path, figure) -> None:
    store = EmbeddingStore(tmp_path / "store")
    keys = [key(i) for i in range(4)]
    store.register(FP, {"model": "x"}, DIM, "float16")
    store.put_batch(FP, keys, np.stack([expected(i) for i in range(4)]))
    store.put_manifest("d", {"keys": [k.hex() for k in keys]})
    calls = {
        "register": lambda: store.register(FP, {}, DIM, "float16"),
        "fingerprints": store.fingerprints,
        "remember_request": lambda: store.remember_request({"r": 1}, FP),
        "recall_request": lambda: store.recall_request({"r": 1}),
        "put_batch": lambda: store.put_batch(FP, [key(9)], np.zeros((1, DIM), np.float16)),
        "has": lambda: store.has(FP, keys),
        "locate": lambda: store.locate(FP, keys),
        "gather": lambda: store.gather(FP, np.zeros((1, 2), np.int64)),
        "get": lambda: store.get(FP, keys),
        "errors": lambda: store.errors(FP),
        "count": lambda: store.count(FP),
        "put_manifest": lambda: store.put_manifest("e", {"keys": []}),
        "manifest": lambda: store.manifest("d"),
        "datasets": store.datasets,
        "verify": store.verify,
        "prune": lambda: store.prune(dataset="d"),
    }
    refusals = tmp_path / "refused.json"

    def child() -> None:
        refused = []
        for name, method in calls.items():
            try:
                method()
            except StoreError as exc:
                if "inherited across fork" in str(exc):
                    refused.append(name)
        store.close()  # a no-op in the child: the parent's handle stays intact
        refusals.write_text(json.dumps(refused))

    assert fork.wait(fork.start(child), 60) == 0
    refused = json.loads(refusals.read_text())
    assert refused == list(calls)
    assert store.verify().ok and store.count(FP) == 4 and store.datasets() == ["d"]
    store.close()
    figure("fork guard", f"{len(refused)}/{len(calls)} public store methods raise a clear StoreError in a forked "
           "child; the parent's store verifies unchanged afterwards")
