"""Resume: `hubtune extract` killed with SIGKILL at several points, then rerun, loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hubtune.store import EmbeddingStore
from hubtune.store.vectors import load_dataset_vectors

pytestmark = pytest.mark.slow

ARGS = ["timm:test_resnet", "--weights", "random:5", "--device", "cpu", "--precision", "fp32",
        "--batch-size", "8", "--workers", "0", "--no-progress", "--dataset", "pets"]


def run_extract(data: Path, cache: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hubtune", "extract", ARGS[0], str(data), "--cache", str(cache),
                             *ARGS[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stored(cache: Path) -> int:
    if not (cache / "data.mdb").exists():
        return 0
    with EmbeddingStore(cache) as store:
        return sum(store.count(fp) for fp in store.fingerprints())


def test_kill_at_several_points_then_rerun(make_image_folder, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=60)
    (data / "dog" / "copy.png").write_bytes((data / "cat" / "000.png").read_bytes())  # a duplicate input
    reference_cache, cache = tmp_path / "reference", tmp_path / "killed"
    assert run_extract(data, reference_cache).wait() == 0

    kills = []
    for threshold in (1, 40, 96):
        process = run_extract(data, cache)
        deadline = time.monotonic() + 120
        while stored(cache) < threshold and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills.append(stored(cache))
        process.wait()
        with EmbeddingStore(cache) as store:
            report = store.verify()
            assert report.ok, report.problems
    print(f"killed at {kills} stored vectors of 120 distinct inputs")
    assert len(kills) >= 2  # the run was really interrupted more than once

    assert run_extract(data, cache).wait() == 0
    with EmbeddingStore(reference_cache) as ref_store, EmbeddingStore(cache) as store:
        assert store.verify().ok
        (fingerprint,) = store.fingerprints()
        assert list(ref_store.fingerprints()) == [fingerprint]
        assert store.count(fingerprint) == 120  # exactly one vector per distinct input
        ours = load_dataset_vectors(store, fingerprint, "pets")
        reference = load_dataset_vectors(ref_store, fingerprint, "pets")
    assert ours.keys == reference.keys and len(ours.keys) == 121
    np.testing.assert_allclose(ours.vectors, reference.vectors, rtol=1e-3, atol=1e-3)
