"""A Hypothesis state machine over the store: random sequences of put / get / resume (close and
reopen, as a restarted job does) / prune / manifests keep the store equal to a plain-dict model.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hubtune.store import EmbeddingStore, StoreError

FINGERPRINTS = {"0" * 31 + "1": 8, "f" * 32: 3}  # fingerprint -> dim
KEYS = [hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(24)]
STEPS = {"runs": 0, "steps": 0}

key_lists = st.lists(st.sampled_from(KEYS), max_size=10)
fingerprints = st.sampled_from(sorted(FINGERPRINTS))


class StoreMachine(RuleBasedStateMachine):
    """The model: vectors and error records per fingerprint, manifests by name."""

    @initialize()
    def open(self) -> None:
        STEPS["runs"] += 1
        root = "/dev/shm" if Path("/dev/shm").is_dir() else None
        self.folder = Path(tempfile.mkdtemp(prefix="hubtune-props-", dir=root))
        self.store = EmbeddingStore(self.folder / "store")
        self.vectors: dict[str, dict[bytes, bytes]] = {fp: {} for fp in FINGERPRINTS}
        self.errors: dict[str, dict[bytes, str]] = {fp: {} for fp in FINGERPRINTS}
        self.manifests: dict[str, list[bytes]] = {}
        self.extracted: dict[str, set[str]] = {}  # fingerprints holding every item when a manifest was put

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()
            shutil.rmtree(self.folder, ignore_errors=True)

    @rule(fp=fingerprints, keys=key_lists, failed=key_lists, seed=st.integers(0, 2**16))
    def put(self, fp: str, keys: list[bytes], failed: list[bytes], seed: int) -> None:
        STEPS["steps"] += 1
        vectors = np.random.default_rng(seed).standard_normal((len(keys), FINGERPRINTS[fp])).astype(np.float16)
        errors = {k: {"reason": f"bad {seed}"} for k in failed}
        written = self.store.put_batch(fp, keys, vectors, errors)
        fresh = {}
        for k, row in zip(keys, vectors):  # the first vector of a key wins, also within one batch
            if k not in self.vectors[fp]:
                fresh.setdefault(k, row.tobytes())
        assert written == len(fresh)  # a key twice in one batch is written once
        self.vectors[fp].update(fresh)
        for k in fresh:
            self.errors[fp].pop(k, None)
        for k, record in errors.items():
            if k not in self.vectors[fp]:
                self.errors[fp][k] = record["reason"]

    @precondition(lambda self: any(self.vectors.values()))
    @rule(fp=fingerprints, data=st.data())
    def get(self, fp: str, data: st.DataObject) -> None:
        STEPS["steps"] += 1
        if not self.vectors[fp]:
            return
        keys = data.draw(st.lists(st.sampled_from(sorted(self.vectors[fp])), min_size=1, max_size=12))
        got = self.store.get(fp, keys, dtype="float16")
        assert [row.tobytes() for row in got] == [self.vectors[fp][k] for k in keys]

    @rule()
    def resume(self) -> None:
        STEPS["steps"] += 1
        self.store.close()
        self.store = EmbeddingStore(self.folder / "store")

    def holds(self, fp: str, key: bytes) -> bool:
        return key in self.vectors[fp] or key in self.errors[fp]

    @rule(fp=fingerprints)
    def prune_fingerprint(self, fp: str) -> None:
        STEPS["steps"] += 1
        if not self.vectors[fp] and not self.errors[fp]:  # nothing stored under it: an error, nothing removed
            with pytest.raises(StoreError, match="no fingerprint"):
                self.store.prune(fingerprint=fp)
            return
        self.store.prune(fingerprint=fp)
        self.vectors[fp], self.errors[fp] = {}, {}
        for recorded in self.extracted.values():
            recorded.discard(fp)

    @rule(name=st.sampled_from(["a", "b"]), keys=key_lists)
    def manifest(self, name: str, keys: list[bytes]) -> None:
        STEPS["steps"] += 1
        self.store.put_manifest(name, {"keys": [k.hex() for k in keys]})
        self.manifests[name] = keys
        self.extracted[name] = {fp for fp in FINGERPRINTS if keys and all(self.holds(fp, k) for k in keys)}

    @rule(name=st.sampled_from(["a", "b"]))
    def prune_dataset(self, name: str) -> None:
        STEPS["steps"] += 1
        if name not in self.manifests:
            with pytest.raises(StoreError, match="no dataset called"):
                self.store.prune(dataset=name)
            return
        self.store.prune(dataset=name)
        del self.manifests[name], self.extracted[name]

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "store"):
            return
        for fp in FINGERPRINTS:
            assert self.store.count(fp) == len(self.vectors[fp])
            assert self.store.has(fp, KEYS) == [k in self.vectors[fp] for k in KEYS]
            assert {k: r["reason"] for k, r in self.store.errors(fp).items()} == self.errors[fp]
            assert not set(self.errors[fp]) & set(self.vectors[fp])  # a key is a vector or an error, never both
        assert sorted(self.store.datasets()) == sorted(self.manifests)
        report = self.store.verify()
        assert {name: set(self.store.recorded_fingerprints(name))
                for name, keys in self.manifests.items()} == self.extracted
        incomplete = any(  # never, through the API: a manifest is judged under the fingerprints it was put with
            not self.holds(fp, k) for name, keys in self.manifests.items() for fp in self.extracted[name] for k in keys
        )
        assert report.ok == (not incomplete), report.problems
        assert report.vectors == sum(len(v) for v in self.vectors.values())


StoreMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                          suppress_health_check=list(HealthCheck), derandomize=True, database=None)
TestStoreMachine = StoreMachine.TestCase


def test_zz_report_the_runs(figure) -> None:
    """Runs after the machine (pytest keeps file order): print how much it explored."""
    if STEPS["runs"]:
        figure("store properties", f"{STEPS['runs']} random programs, {STEPS['steps']} put/get/resume/prune/manifest "
               "steps: the store equalled the model after every step (counts, has, errors, get bytes, datasets, verify)")
