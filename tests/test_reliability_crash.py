"""Crash and resume, with numbers: kill -9 at 50+ moments, idempotent rerun, atomic index save,
disk and map full, stale LMDB readers.

The harnesses fork this test process (torch and hubtune already imported) instead of spawning
``hubtune``; each child runs the real CLI (``hubtune.cli``) or the call it makes.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from click.testing import CliRunner

from hubtune.store import EmbeddingStore, StoreError, release_inherited

REF = "hf:hubtune-test/tiny-vit"  # a 2-layer ViT on 32 px images: ~800 items/s on one core
EXTRACT_ARGS = ["--dataset", "crash", "--batch-size", "16", "--workers", "0", "--no-progress",
                "--device", "cpu", "--precision", "fp32"]
GOOD, BAD = 1900, 100  # 2,000 items, 5 % malformed (conftest's make_crash_dataset)
KILLS = 50
SEED = 5


def key_of(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


# -- children --------------------------------------------------------------------------------------------------
def run_cli(*args: str) -> None:
    """``hubtune ARGS`` in this (forked) process; exits with the CLI's exit code."""
    from hubtune.cli import main

    main(list(args))


# Progress, as the child reports it: one byte per event, appended to a marker file.
#   L  the dataset listing begins            M  the model load begins        (the CLI's start-up)
#   F  a forward pass begins                 P  a put inside a write transaction (fingerprint record, request
#   C  a write transaction's body is done:      memo, a batch's block, keys and error records)
#      LMDB commits it now                   B  a batch's put_batch begins   E  it returned: the batch is committed
# A kill moment is the n-th event of a kind: the child halts there (writes K, then waits for its SIGKILL), so the
# kill lands at that point of the work whatever the machine's speed. A *race* moment does not halt: the parent
# kills as soon as it reads the n-th C, which lands inside LMDB's commit or just after it.
EVENTS = "LMFPCBE"


@dataclass(frozen=True)
class Moment:
    cli: bool  # the CLI from its start (listing, loading); else a warm child (the parent's backbone and listing)
    event: str  # one of EVENTS
    n: int  # the n-th such event of the child
    race: bool = False  # kill on sight instead of halting there

    def most_commits(self) -> int:
        """The most batches the child can have committed when the kill lands (a batch's transaction holds
        at least 16 puts: a block and its keys, or one error record per bad item)."""
        if self.race:
            return self.n + 1  # the n-th commit may finish, and the next one if the parent is slow to look
        return {"L": 0, "M": 0, "F": self.n - 1, "P": (self.n - 1) // 16, "C": self.n, "B": self.n - 1,
                "E": self.n}[self.event]

    def __str__(self) -> str:
        where = {"L": "listing", "M": "model load", "F": "forward", "P": "put", "C": "commit", "B": "batch",
                 "E": "committed batch"}[self.event]
        return f"{'CLI' if self.cli else 'warm'} {'race to' if self.race else 'halt at'} {where} #{self.n}"


def kill_plan(rng: random.Random) -> list[Moment]:
    """KILLS seeded moments: a third through the CLI (start-up included), the rest warm (more kills a minute)."""
    plan = []
    for i in range(KILLS):
        cli = i % 3 == 0
        event = rng.choice("LMFPPEC" if cli else "FPPPECC")
        n = {"L": 1, "M": 1, "F": rng.randint(1, 3), "P": rng.randint(1, 40), "E": rng.randint(1, 2),
             "C": rng.randint(3, 4)}[event]  # commits 1 and 2 record the fingerprint and the request memo
        plan.append(Moment(cli, event, n, race=event == "C"))
    return plan


def report_progress(marker: Path, halt_at: tuple[str, int] | None) -> None:
    """Make this (forked) child append one byte per event to ``marker``; at ``halt_at`` (event, n) it
    writes K and waits there for its SIGKILL."""
    import hubtune.api
    import hubtune.extract.streams
    from hubtune.data import Dataset

    fd = os.open(marker, os.O_WRONLY | os.O_APPEND)
    counts: dict[str, int] = {}
    lock = threading.Lock()

    def event(kind: str) -> None:
        with lock:
            counts[kind] = counts.get(kind, 0) + 1
            os.write(fd, kind.encode())
            halt = halt_at == (kind, counts[kind])
            if halt:
                os.write(fd, b"K")
        if halt:
            threading.Event().wait()  # this thread stops here until the SIGKILL

    def announced(kind: str, function: Callable) -> Callable:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            event(kind)
            return function(*args, **kwargs)

        return wrapped

    class MarkedTransaction:
        def __init__(self, txn: Any):
            self._txn = txn

        def put(self, *args: Any, **kwargs: Any) -> Any:
            done = self._txn.put(*args, **kwargs)
            event("P")
            return done

        def __getattr__(self, name: str) -> Any:
            return getattr(self._txn, name)

    write, put_batch = EmbeddingStore._write, EmbeddingStore.put_batch  # every write transaction, every batch

    @contextmanager
    def marked_write(self: EmbeddingStore) -> Iterator[Any]:
        with write(self) as txn:
            yield MarkedTransaction(txn)
            event("C")

    def marked_put_batch(self: EmbeddingStore, *args: Any, **kwargs: Any) -> int:
        event("B")
        written = put_batch(self, *args, **kwargs)
        event("E")
        return written

    Dataset.items = announced("L", Dataset.items)  # this child only
    hubtune.api.load_backbone = announced("M", hubtune.api.load_backbone)
    hubtune.extract.streams._embed = announced("F", hubtune.extract.streams._embed)
    EmbeddingStore._write, EmbeddingStore.put_batch = marked_write, marked_put_batch


def extract_child(data: Path, cache: Path, marker: Path | None = None, warm: tuple | None = None,
                  halt_at: tuple[str, int] | None = None) -> None:
    """``hubtune extract`` into ``cache``.

    With ``marker``, the child reports its progress there (:func:`report_progress`) and halts at
    ``halt_at``. With ``warm = (backbone, items)`` (loaded and listed by the parent before forking)
    the child calls :func:`hubtune.extract.extract` straight away, skipping the CLI's listing and
    model loading: more kills a minute.
    """
    if marker is not None:
        report_progress(marker, halt_at)
    if warm is None:
        run_cli("extract", REF, str(data), "--cache", str(cache), *EXTRACT_ARGS)
        return
    from hubtune.data import Dataset, open_dataset
    from hubtune.extract import extract

    backbone, items = warm
    Dataset.items = lambda self: items  # this child only: the parent listed them already
    with EmbeddingStore(cache) as store:
        extract(REF, open_dataset(data), store, dataset_name="crash", batch_size=16, progress=False,
                backbone=backbone)


def kill_at(pid: int, marker: Path, race: tuple[str, int] | None) -> tuple[int | None, bytes]:
    """SIGKILL the child once it halts at its moment (K in the marker) or, for a race, once the marker shows
    the n-th event; return its exit status (-9 when killed here) and the marker after the kill. A child
    that never gets there within 120 s is killed too, and reported as None (a watchdog against hangs)."""
    deadline = time.monotonic() + 120
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), marker.read_bytes()
        marks = marker.read_bytes()
        due = b"K" in marks if race is None else marks.count(race[0].encode()) >= race[1]
        if due or time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
            return (code if due else None), marker.read_bytes()
        time.sleep(0.0002)


def cache_verify(cache: Path) -> dict:
    """``hubtune cache verify --json`` (in this process); asserts the exit code matches ``ok``."""
    from hubtune.cli import cli

    result = CliRunner().invoke(cli, ["cache", "verify", "--cache", str(cache), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == (0 if report["ok"] else 1), result.output
    return report


def stored_state(cache: Path) -> tuple[str, dict[bytes, np.ndarray], set[bytes]]:
    """(fingerprint, vectors by content key, keys with an error record) of a finished store."""
    with EmbeddingStore(cache, readonly=True) as store:
        (fingerprint,) = store.fingerprints()
        manifest = store.manifest("crash")
        keys = [bytes.fromhex(k) for k in manifest["keys"]]
        present = [k for k, has in zip(keys, store.has(fingerprint, keys)) if has]
        vectors = dict(zip(present, store.get(fingerprint, present)))
        return fingerprint, vectors, set(store.errors(fingerprint))


def float16_ulps(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference in units of float16's last place (at the larger magnitude)."""
    scale = np.spacing(np.maximum(np.abs(a), np.abs(b)).astype(np.float16)).astype(np.float32)
    return float((np.abs(a - b) / scale).max())


# -- fixtures ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dataset(make_crash_dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[bytes], set[bytes]]:
    return make_crash_dataset(tmp_path_factory.mktemp("crash") / "data", good=GOOD, bad=BAD)


@pytest.fixture(scope="module")
def reference(fork, tiny_vit_repo: str, dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run over the same data."""
    cache = tmp_path_factory.mktemp("reference") / "cache"
    log = cache.parent / "log.txt"
    assert fork.wait(fork.start(lambda: extract_child(dataset[0], cache), stderr_to=log), 300) == 0, log.read_text()
    return cache


# -- kill -9 anywhere ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_at_50_moments_then_resume_equals_an_uninterrupted_run(fork, dataset, reference: Path, tmp_path: Path,
                                                                      figure) -> None:
    from hubtune.api import load_backbone
    from hubtune.data import open_dataset

    data, good, bad = dataset
    cache, marker, log = tmp_path / "cache", tmp_path / "marker", tmp_path / "log.txt"
    plan = kill_plan(random.Random(SEED))
    batches = -(-(len(good) + len(bad)) // 16)
    halted_in_transaction = sum(not m.race and m.event == "P" for m in plan)
    assert sum(m.most_commits() for m in plan) < batches, "the plan could finish the job before its last kill"
    assert halted_in_transaction >= 5 and any(m.race for m in plan) and any(m.cli for m in plan)
    warm = (load_backbone(REF, device="cpu", precision="fp32"), open_dataset(data).items())
    kills, verified, progress, landed = 0, 0, [], {"in a write transaction": 0, "in a commit": 0}
    for moment in plan:
        marker.write_bytes(b"")
        halt_at = None if moment.race else (moment.event, moment.n)
        pid = fork.start(lambda: extract_child(data, cache, marker, None if moment.cli else warm, halt_at),
                         stderr_to=log)
        code, marks = kill_at(pid, marker, (moment.event, moment.n) if moment.race else None)
        assert code == -signal.SIGKILL, (f"{moment}: the child {'never got there' if code is None else f'exited {code}'}"
                                         f" (events {marks.decode()[-80:]!r})\n{log.read_text()[-3000:]}")
        kills += 1
        in_transaction = marks.rfind(b"P") > max(marks.rfind(b"C"), marks.rfind(b"E"))  # puts, not committed
        in_commit = marks.rstrip(b"K").endswith(b"C") and marks.rfind(b"B") > marks.rfind(b"E")  # a batch's
        landed["in a write transaction"] += in_transaction
        landed["in a commit"] += in_commit
        if (cache / "data.mdb").exists():
            report = cache_verify(cache)  # every block's CRC, every key's location
            assert report["ok"], (str(moment), report["problems"])
            verified += 1
            progress.append(report["vectors"])
    assert kills == KILLS and landed["in a write transaction"] >= halted_in_transaction
    assert progress == sorted(progress), f"committed vectors were lost by a kill: {progress}"

    assert fork.wait(fork.start(lambda: extract_child(data, cache), stderr_to=log), 300) == 0, log.read_text()[-3000:]
    assert cache_verify(cache)["ok"]
    fingerprint, vectors, errors = stored_state(cache)
    ref_fingerprint, ref_vectors, ref_errors = stored_state(reference)
    assert fingerprint == ref_fingerprint
    assert set(vectors) == good and errors == bad  # one vector per good item, one error per bad item
    with EmbeddingStore(cache, readonly=True) as store:
        assert store.count(fingerprint) == len(good)  # and nothing else in the key index
    ours = np.stack([vectors[k] for k in sorted(good)])
    theirs = np.stack([ref_vectors[k] for k in sorted(good)])
    ulps = float16_ulps(ours, theirs)
    assert ulps <= 1.0, f"resumed vectors differ from the uninterrupted run by {ulps} float16 ulps"
    kinds = {str(m).split(" #")[0] for m in plan}
    figure("kill -9", f"{kills} SIGKILLs at moments chosen by progress ({len(kinds)} kinds: listing, model load, "
           f"forward, put, committed batch, commit race; {sum(m.cli for m in plan)} through the CLI), "
           f"{landed['in a write transaction']} inside a write transaction and {landed['in a commit']} in a batch's "
           f"commit, over {len(good) + len(bad)} items ({len(bad)} malformed); cache verify clean after all "
           f"{verified} kills that left a store (vectors stored at the kills: {min(progress)}..{max(progress)}, never "
           f"fewer than before); final: {len(vectors)} vectors, {len(errors)} error records, max difference to an "
           f"uninterrupted run {ulps:.2f} float16 ulp")


@pytest.mark.slow
def test_complete_rerun_computes_nothing_and_changes_no_byte(fork, dataset, reference: Path, figure) -> None:
    def snapshot() -> dict[str, str]:  # every file but the lock file (reader slots change there by design)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in reference.iterdir() if p.name != "lock.mdb"}

    def rerun() -> dict:
        import hubtune.api
        import hubtune.extract.streams
        from hubtune.cli import cli

        counts = {"forward": 0, "loads": 0}
        embed, load = hubtune.extract.streams._embed, hubtune.api.load_backbone

        def counted_embed(*args, **kwargs):  # type: ignore[no-untyped-def]
            counts["forward"] += 1
            return embed(*args, **kwargs)

        def counted_load(*args, **kwargs):  # type: ignore[no-untyped-def]
            counts["loads"] += 1
            return load(*args, **kwargs)

        hubtune.extract.streams._embed, hubtune.api.load_backbone = counted_embed, counted_load
        started = time.perf_counter()
        summary = cli.main(["extract", REF, str(dataset[0]), "--cache", str(reference), *EXTRACT_ARGS, "--json"],
                           standalone_mode=False)
        return {**counts, "seconds": time.perf_counter() - started, "summary": summary}

    before = snapshot()
    result = fork.call(rerun)
    assert snapshot() == before, "a rerun over a complete cache changed bytes of the store"
    assert result["forward"] == 0 and result["loads"] == 0
    figure("idempotent rerun", f"{result['forward']} forward passes, {result['loads']} model loads, "
           f"0 bytes changed in {sorted(before)}; {result['seconds']:.2f} s for {GOOD + BAD} items")


# -- atomic index save -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_index_save_killed_at_24_moments_always_leaves_a_loadable_index(fork, tmp_path: Path, figure) -> None:
    from hubtune import index as ix

    rng = np.random.default_rng(0)
    versions = {rows: rng.standard_normal((rows, 64)).astype(np.float32) for rows in (20_000, 20_500)}
    spec, identity = ix.IndexSpec(kind="flat"), {"fingerprint": "f" * 32, "dataset": "d"}
    path = tmp_path / "index" / "d.faiss"
    ix.save(ix.build(versions[20_000], spec), path, spec, identity)
    built = {rows: ix.build(vectors, spec) for rows, vectors in versions.items()}
    marker = tmp_path / "marker"

    def saver(halt_at: tuple[str, int] | None) -> None:
        """Save alternate versions forever, marking each save's start (s), each rename (r) and its end (e);
        at ``halt_at`` (mark, n) write K and wait there for the SIGKILL."""
        fd = os.open(marker, os.O_WRONLY | os.O_APPEND)
        counts: dict[str, int] = {}
        replace = os.replace

        def mark(kind: str) -> None:
            counts[kind] = counts.get(kind, 0) + 1
            os.write(fd, kind.encode())
            if halt_at == (kind, counts[kind]):
                os.write(fd, b"K")
                threading.Event().wait()

        def marked_replace(*args, **kwargs):  # type: ignore[no-untyped-def]
            replace(*args, **kwargs)
            mark("r")

        os.replace = marked_replace
        for turn in range(10**6):
            mark("s")
            ix.save(built[(20_000, 20_500)[turn % 2]], path, spec, identity)
            mark("e")

    # Moments by progress, in the k-th save of a child (k = 1..4, both versions): halted as it starts, between
    # its two renames (the sidecar in place, the index not yet), after its second rename, after it returned; or
    # killed on sight of its start (a race: lands while the temporary files are written).
    choose = random.Random(SEED)
    plan = []
    for _ in range(24):
        k, kind = choose.randint(1, 4), choose.choice(["start", "between renames", "between renames", "renamed",
                                                        "returned", "race", "race"])
        plan.append((kind, {"start": ("s", k), "between renames": ("r", 2 * k - 1), "renamed": ("r", 2 * k),
                            "returned": ("e", k), "race": ("s", k)}[kind]))
    halted_inside = sum(kind in ("start", "between renames", "renamed") for kind, _ in plan)
    halted_between = sum(kind == "between renames" for kind, _ in plan)
    assert halted_inside >= 12 and halted_between >= 1

    between_renames = inside_save = 0
    seen = set()
    for kind, (mark, n) in plan:
        marker.write_bytes(b"")
        pid = fork.start(lambda: saver(None if kind == "race" else (mark, n)))
        code, state = kill_at(pid, marker, (mark, n) if kind == "race" else None)
        assert code == -signal.SIGKILL, f"{kind} #{n}: the saver {'never got there' if code is None else 'exited'}"
        last_save = state[state.rfind(b"s"):].rstrip(b"K")
        inside_save += not last_save.endswith(b"e")
        between_renames += last_save == b"sr"  # one file renamed in place, the other not yet
        loaded = ix.load(path, identity)
        assert loaded is not None, f"no loadable index after a kill at marker state {last_save!r}"
        assert loaded[0].ntotal in versions
        seen.add(loaded[0].ntotal)
    assert between_renames >= halted_between and inside_save >= halted_inside
    leftovers = len(list(path.parent.glob(".*")))
    figure("atomic index save", f"24 SIGKILLs at moments chosen by progress ({inside_save} inside a save, "
           f"{between_renames} between its two renames): 24/24 loads found an index whose sidecar sha256 matches (versions seen: {sorted(seen)}); "
           f"{leftovers} temporary files left beside it")


# -- disk and map full -------------------------------------------------------------------------------------------
def _mount_tmpfs(where: Path, size: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                                capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


@pytest.mark.slow
def test_disk_full_is_a_clear_error_the_store_verifies_and_resumes(fork, make_crash_dataset, tiny_vit_repo: str,
                                                                   tmp_path: Path, figure) -> None:
    data, good, bad = make_crash_dataset(tmp_path / "data", good=600, bad=20)
    roomy, log = tmp_path / "roomy", tmp_path / "log.txt"
    assert fork.wait(fork.start(lambda: extract_child(data, roomy), stderr_to=log), 120) == 0, log.read_text()
    final_size = (roomy / "data.mdb").stat().st_size
    small, filler = tmp_path / "small", None
    mounted = _mount_tmpfs(small, 16 * final_size)
    limit = None
    try:
        cache = small / "cache"
        if mounted:  # a real full file system: fill it, leaving room for about half the store
            cache.mkdir()
            stat = os.statvfs(small)
            filler = small / "filler"
            filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - final_size // 2))
            how = "tmpfs filled up (ENOSPC)"
            first = fork.start(lambda: extract_child(data, cache), stderr_to=log)
        else:  # no mount permission: the kernel's file-size limit refuses writes past it (EFBIG)
            limit = final_size // 2
            how = f"RLIMIT_FSIZE={limit} bytes (EFBIG; tmpfs could not be mounted)"

            def limited() -> None:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
                extract_child(data, cache)

            first = fork.start(limited, stderr_to=log)
        code = fork.wait(first, 120)
        message = log.read_text().strip().splitlines()[-1]
        assert code == 1, log.read_text()[-3000:]
        assert message.startswith("Error: could not write to the store") and "run the same command again" in message
        assert "Traceback" not in log.read_text()
        report = cache_verify(cache)
        assert report["ok"], report["problems"]
        partial = report["vectors"]
        assert partial < len(good)
        if filler is not None:
            filler.unlink()  # space is freed
        code = fork.wait(fork.start(lambda: extract_child(data, cache), stderr_to=log), 120)
        assert code == 0, log.read_text()[-3000:]
        assert cache_verify(cache)["ok"]
        _, vectors, errors = stored_state(cache)
        _, ref_vectors, _ = stored_state(roomy)
        assert set(vectors) == good and errors == bad
        ulps = max(float16_ulps(vectors[k], ref_vectors[k]) for k in good)
        assert ulps <= 1.0
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(small)], check=False)
    figure("disk full", f"{how}: exit code 1 with `{message}`; store verified with {partial} of "
           f"{len(good)} vectors kept; after freeing space the rerun completed ({len(vectors)} vectors, "
           f"{len(errors)} errors, {ulps:.2f} ulp from a run with room)")


@pytest.mark.slow
def test_map_full_is_a_clear_error_and_resumes_with_a_larger_map(fork, make_crash_dataset, tiny_vit_repo: str,
                                                                 tmp_path: Path, figure) -> None:
    from hubtune.backbone import LoadOptions
    from hubtune.errors import HubtuneError
    from hubtune.extract import extract

    data, good, bad = make_crash_dataset(tmp_path / "data", good=600, bad=20)
    cache = tmp_path / "cache"
    options = LoadOptions(device="cpu", precision="fp32")

    def run(map_size: int) -> dict:
        try:
            with EmbeddingStore(cache, map_size=map_size) as store:
                summary = extract(REF, data, store, dataset_name="crash", options=options, batch_size=16,
                                  progress=False)
            return {"ok": True, "computed": summary.computed}
        except HubtuneError as exc:
            return {"ok": False, "type": type(exc).__name__, "message": str(exc), "exit_code": exc.exit_code}

    failed = fork.call(lambda: run(96 * 1024))
    assert not failed["ok"] and failed["type"] == StoreError.__name__ and failed["exit_code"] == 1
    assert "reached its map size" in failed["message"] and "larger map_size" in failed["message"]
    report = cache_verify(cache)
    assert report["ok"] and report["vectors"] < len(good)
    resumed = fork.call(lambda: run(64 << 20))
    assert resumed["ok"] and resumed["computed"] == len(good) - report["vectors"]
    _, vectors, errors = stored_state(cache)
    assert set(vectors) == good and errors == bad
    figure("map full", f"96 KiB map: StoreError (exit code 1) after {report['vectors']} of {len(good)} vectors; "
           f"store verified; reopened with a 64 MiB map the rerun computed the other {resumed['computed']}")


# -- stale readers -------------------------------------------------------------------------------------------------
MAX_READERS = 8
BURST = 5


def _reader(path: Path, pipe: int, use_hubtune: bool) -> None:
    """Open the store, hold a read transaction mid-read, report 'r' (or 'F' if the reader table is full)."""
    import lmdb

    try:
        if use_hubtune:
            env = EmbeddingStore(path, readonly=True, max_readers=MAX_READERS).env
        else:  # the control: LMDB without reader_check()
            release_inherited()
            env = lmdb.open(str(path), readonly=True, max_readers=MAX_READERS, max_dbs=8, lock=True)
        txn = env.begin()
        cursor = txn.cursor(db=env.open_db(b"blocks", txn=txn, create=False))
        cursor.first()
        os.write(pipe, b"r")
        while True:  # mid-read until killed
            cursor.value()
            time.sleep(0.01)
    except lmdb.ReadersFullError:
        os.write(pipe, b"F")


def _kill_readers(fork: Any, path: Path, bursts: int, use_hubtune: bool) -> tuple[int, int]:
    """``bursts`` times, start BURST readers at once and SIGKILL them all mid-read.

    Returns (readers killed, number of the first reader that met ReadersFullError or 0).
    """
    killed = 0
    for _ in range(bursts):
        pipes, pids = [], []
        for _ in range(BURST):
            read_end, write_end = os.pipe()
            pids.append(fork.start(lambda: _reader(path, write_end, use_hubtune)))
            os.close(write_end)
            pipes.append(read_end)
        answers = []
        for fd in pipes:
            answers.append(os.read(fd, 1))
            os.close(fd)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        for answer in answers:
            if answer == b"F":
                return killed, killed + 1
            assert answer == b"r"
            killed += 1
    return killed, 0


def _holder(path: Path) -> EmbeddingStore:
    """A long-lived process's handle: it keeps LMDB's lock file (and its reader table) in use."""
    store = EmbeddingStore(path, max_readers=MAX_READERS)
    store.put_batch("ab" * 16, [key_of(str(i).encode()) for i in range(64)], np.ones((64, 8), np.float16))
    return store


@pytest.mark.slow
def test_50_killed_readers_leave_no_readers_full_error(fork, tmp_path: Path, figure) -> None:
    with _holder(tmp_path / "control") as control:
        _, control_full_at = _kill_readers(fork, control.path, 10, use_hubtune=False)
    assert control_full_at, "the control never filled LMDB's reader table: the test cannot fail"
    with _holder(tmp_path / "store") as holder:
        killed, full_at = _kill_readers(fork, holder.path, 10, use_hubtune=True)
        assert (killed, full_at) == (50, 0), f"ReadersFullError at reader {full_at} after {killed} killed ones"
        live, _ = _kill_readers(fork, holder.path, 1, use_hubtune=True)  # ... then BURST live readers at once
        assert live == BURST
        assert holder.count("ab" * 16) == 64
    figure("stale readers", f"max_readers={MAX_READERS}, readers killed mid-read in bursts of {BURST}: without "
           f"reader_check LMDB raised ReadersFullError at reader {control_full_at}; with hubtune's open, "
           f"{killed} killed readers then {live} concurrent new ones: 0 ReadersFullError")
