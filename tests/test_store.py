"""The LMDB embedding store: blocks, key index, errors, manifests, verify, prune, fork guard."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from hubtune.store import EmbeddingStore, StoreError, decode_block, encode_block

FP = "0" * 31 + "1"
FP2 = "f" * 32


def keys(n: int, salt: str = "") -> list[bytes]:
    return [hashlib.blake2b(f"{salt}{i}".encode(), digest_size=16).digest() for i in range(n)]


@pytest.fixture
def store(tmp_path):
    with EmbeddingStore(tmp_path / "store") as opened:
        yield opened


def test_round_trip_in_requested_order(store) -> None:
    rng = np.random.default_rng(0)
    k = keys(100)
    vectors = rng.standard_normal((100, 24)).astype(np.float16)
    assert store.put_batch(FP, k[:60], vectors[:60]) == 60
    assert store.put_batch(FP, k[60:], vectors[60:]) == 40
    order = rng.permutation(100)
    got = store.get(FP, [k[i] for i in order])
    np.testing.assert_array_equal(got, vectors[order].astype(np.float32))
    assert store.count(FP) == 100


def test_existing_keys_are_not_written_twice(store) -> None:
    k = keys(10)
    first = np.ones((10, 8), np.float16)
    store.put_batch(FP, k, first)
    assert store.put_batch(FP, k, np.zeros((10, 8), np.float16)) == 0
    np.testing.assert_array_equal(store.get(FP, k), first)
    assert store.has(FP, k + keys(1, "new")) == [True] * 10 + [False]


def test_fingerprints_are_separate(store) -> None:
    k = keys(5)
    store.put_batch(FP, k, np.ones((5, 4), np.float16))
    assert store.has(FP2, k) == [False] * 5
    with pytest.raises(KeyError):
        store.get(FP2, k)


def test_errors_are_recorded_and_cleared_by_a_later_vector(store) -> None:
    k = keys(3)
    store.put_batch(FP, k[:2], np.ones((2, 4), np.float16), errors={k[2]: {"reason": "truncated image"}})
    assert store.errors(FP) == {k[2]: {"reason": "truncated image"}}
    store.put_batch(FP, k[2:], np.ones((1, 4), np.float16))
    assert store.errors(FP) == {}


def test_manifest_round_trip(store) -> None:
    manifest = {"keys": [x.hex() for x in keys(3)], "labels": ["a", "b", None], "splits": ["train"] * 3,
                "origins": ["/x/1", "/x/2", "f.jsonl:3"]}
    store.put_manifest("ds", manifest)
    assert store.manifest("ds") == manifest and store.datasets() == ["ds"]
    with pytest.raises(StoreError, match="no dataset called 'nope'"):
        store.manifest("nope")


def test_verify_clean_then_detects_damage(store) -> None:
    k = keys(4)
    store.register(FP, {"model": "x"}, 4, "float16")
    store.put_batch(FP, k, np.ones((4, 4), np.float16))
    store.put_manifest("ds", {"keys": [x.hex() for x in k]})
    assert store.verify().ok
    damaged = bytearray(encode_block(np.ones((4, 4), np.float16)))
    damaged[-1] ^= 0xFF
    with store.env.begin(write=True) as txn:
        txn.put(bytes.fromhex(FP) + (0).to_bytes(8, "big"), bytes(damaged), db=store._blocks)
    report = store.verify()
    assert not report.ok and "CRC32" in report.problems[0]


def test_verify_reports_manifest_items_without_vectors(store) -> None:
    k = keys(4)
    store.put_batch(FP, k[:2], np.ones((2, 4), np.float16))
    store.put_manifest("ds", {"keys": [x.hex() for x in k]})
    report = store.verify()
    assert not report.ok and "2 items have neither a vector nor an error" in report.problems[0]


def test_prune_fingerprint_and_dataset(store) -> None:
    store.register(FP, {}, 4, "float16")
    store.put_batch(FP, keys(5), np.ones((5, 4), np.float16))
    store.put_batch(FP2, keys(5), np.ones((5, 4), np.float16))
    store.put_manifest("ds", {"keys": []})
    assert store.prune(fingerprint=FP) > 0
    assert store.count(FP) == 0 and store.count(FP2) == 5 and FP not in store.fingerprints()
    store.prune(dataset="ds")
    assert store.datasets() == []


def test_block_codec_rejects_bad_input() -> None:
    with pytest.raises(StoreError):
        encode_block(np.ones((2, 2, 2), np.float32))
    with pytest.raises(StoreError):
        decode_block(b"short")
    block = encode_block(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(decode_block(block), np.arange(6, dtype=np.float32).reshape(2, 3))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_handle_inherited_across_fork_refuses(store) -> None:
    pid = os.fork()
    if pid == 0:  # child: using the parent's handle must raise, not corrupt
        try:
            store.has(FP, keys(1))
        except StoreError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("dim", [384, 512, 768, 2048])
def test_size_on_disk_close_to_raw_bytes(tmp_path, dim: int) -> None:
    rows, batch = 20_000, 256
    rng = np.random.default_rng(dim)
    with EmbeddingStore(tmp_path / "s") as store:
        for start in range(0, rows, batch):
            n = min(batch, rows - start)
            store.put_batch(FP, keys(n, salt=str(start)), rng.standard_normal((n, dim)).astype(np.float16))
    on_disk = (tmp_path / "s" / "data.mdb").stat().st_blocks * 512
    ratio = on_disk / (rows * dim * 2)
    print(f"dim {dim}: store / raw vector bytes = {ratio:.3f}")
    assert ratio <= 1.3
