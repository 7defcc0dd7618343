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
import time
from pathlib import Path
from typing import Any, Callable

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


def extract_child(data: Path, cache: Path, marker: Path | None = None, warm: tuple | None = None) -> None:
    """``hubtune extract`` into ``cache``.

    With ``marker``, every ``put_batch`` (one write transaction) writes B before and E after it, so
    the parent knows whether its SIGKILL landed inside a commit. With ``warm = (backbone, items)``
    (loaded and listed by the parent before forking) the child calls :func:`hubtune.extract.extract`
    straight away, skipping the CLI's seconds of listing and model loading: more kills per minute.
    """
    if marker is not None:
        fd = os.open(marker, os.O_WRONLY | os.O_APPEND)
        original = EmbeddingStore.put_batch

        def put_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            os.write(fd, b"B")
            written = original(self, *args, **kwargs)
            os.write(fd, b"E")
            return written

        EmbeddingStore.put_batch = put_batch  # this child only
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


def kill_when(pid: int, marker: Path, due: Callable[[float, bytes], bool]) -> tuple[int, float | None]:
    """Poll a child every 0.2 ms and SIGKILL it once ``due(seconds since start, marker bytes)``.

    Returns its exit code (-9 when killed) and the seconds it took to its first commit, if it got there.
    """
    started, first_commit = time.monotonic(), None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), first_commit
        elapsed, marks = time.monotonic() - started, marker.read_bytes()
        if first_commit is None and marks:
            first_commit = elapsed
        if due(elapsed, marks) or elapsed > 120:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), first_commit
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
    rng = random.Random(SEED)
    warm = (load_backbone(REF, device="cpu", precision="fp32"), open_dataset(data).items())
    kills = inside_commit = verified = 0
    progress = []
    startup = 1.5  # seconds from fork to the CLI's first commit; re-measured as the runs go
    for attempt in range(3 * KILLS):
        if kills >= KILLS:
            break
        marker.write_bytes(b"")
        if attempt % 2 == 0:  # the CLI, killed at a seeded moment: start-up, listing, loading, compute or commit
            pid = fork.start(lambda: extract_child(data, cache, marker), stderr_to=log)
            moment = rng.uniform(0.0, 1.25) * startup  # in units of its start-up: ~1 in 5 after the first commit
            code, first_commit = kill_when(pid, marker, lambda elapsed, marks: elapsed >= moment)
            startup = first_commit or startup
        else:  # a warm child, killed right after its k-th write transaction began
            pid = fork.start(lambda: extract_child(data, cache, marker, warm), stderr_to=log)
            nth = rng.randint(1, 4)
            code, _ = kill_when(pid, marker, lambda elapsed, marks: marks.count(b"B") >= nth)
        if code is not None and code >= 0:
            assert code == 0, log.read_text()[-3000:]
            break  # the job completed between kills: nothing left to interrupt
        kills += 1
        inside_commit += marker.read_bytes().endswith(b"B")
        if (cache / "data.mdb").exists():
            report = cache_verify(cache)  # every block's CRC, every key's location
            assert report["ok"], report["problems"]
            verified += 1
            progress.append(report["vectors"])
    assert kills >= KILLS, f"only {kills} kills before the job finished; slow the kill moments down"
    assert inside_commit >= 5, f"only {inside_commit} kills landed inside a write transaction"

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
    figure("kill -9", f"{kills} SIGKILLs ({inside_commit} inside a write transaction) over {len(good) + len(bad)} "
           f"items ({len(bad)} malformed); cache verify clean after all {verified} kills that left a store "
           f"(vectors stored at the kills: {min(progress)}..{max(progress)}); final: {len(vectors)} vectors, "
           f"{len(errors)} error records, max difference to an uninterrupted run {ulps:.2f} float16 ulp")


@pytest.mark.slow
def test_complete_rerun_computes_nothing_and_changes_no_byte(fork, dataset, reference: Path, figure) -> None:
    def snapshot() -> dict[str, str]:  # every file but the lock file (reader slots change there by design)
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in reference.iterdir() if p.name != "lock.mdb"}

    def rerun() -> dict:
        import hubtune.api
        import hubtune.extract
        from hubtune.cli import cli

        counts = {"forward": 0, "loads": 0}
        embed, load = hubtune.extract._embed, hubtune.api.load_backbone

        def counted_embed(*args, **kwargs):  # type: ignore[no-untyped-def]
            counts["forward"] += 1
            return embed(*args, **kwargs)

        def counted_load(*args, **kwargs):  # type: ignore[no-untyped-def]
            counts["loads"] += 1
            return load(*args, **kwargs)

        hubtune.extract._embed, hubtune.api.load_backbone = counted_embed, counted_load
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

    def saver() -> None:  # saves alternate versions forever; marks save start (s), each rename (r), end (e)
        fd = os.open(marker, os.O_WRONLY | os.O_APPEND)
        replace = os.replace

        def marked_replace(*args, **kwargs):  # type: ignore[no-untyped-def]
            replace(*args, **kwargs)
            os.write(fd, b"r")

        os.replace = marked_replace
        for turn in range(10**6):
            os.write(fd, b"s")
            ix.save(built[(20_000, 20_500)[turn % 2]], path, spec, identity)
            os.write(fd, b"e")

    between_renames = inside_save = 0
    seen = set()
    random_moments = random.Random(SEED)
    for _ in range(24):
        marker.write_bytes(b"")
        pid = fork.start(saver)
        while not marker.read_bytes():
            time.sleep(0.001)
        assert fork.wait(pid, random_moments.uniform(0.0, 0.25)) is None  # killed, not finished
        state = marker.read_bytes()
        last_save = state[state.rfind(b"s"):]
        inside_save += not last_save.endswith(b"e")
        between_renames += last_save == b"sr"  # one file renamed in place, the other not yet
        loaded = ix.load(path, identity)
        assert loaded is not None, f"no loadable index after a kill at marker state {last_save!r}"
        assert loaded[0].ntotal in versions
        seen.add(loaded[0].ntotal)
    assert between_renames >= 1 and inside_save >= 12
    leftovers = len(list(path.parent.glob(".*")))
    figure("atomic index save", f"24 SIGKILLs ({inside_save} inside a save, {between_renames} between its two "
           f"renames): 24/24 loads found an index whose sidecar sha256 matches (versions seen: {sorted(seen)}); "
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
