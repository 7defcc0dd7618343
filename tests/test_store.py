"""The LMDB embedding store: blocks, key index, errors, manifests, verify, prune, fork guard."""

from __future__ import annotations

import hashlib
import os
import zlib
from pathlib import Path

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


def test_verify_ignores_fingerprints_that_only_share_files_with_a_dataset(store) -> None:
    """The acceptance case: `img` under two fingerprints, `imgs` (a subset plus a missing file) under
    one; `imgs` is judged under the one it was extracted with only."""
    img, missing = keys(6), keys(1, "missing")
    for fingerprint in (FP, FP2):
        store.put_batch(fingerprint, img, np.ones((6, 4), np.float16))
        store.put_manifest("img", {"keys": [x.hex() for x in img]})
    store.put_batch(FP, [], np.ones((0, 4), np.float16), errors={missing[0]: {"reason": "no such file"}})
    store.put_manifest("imgs", {"keys": [x.hex() for x in img[:3] + missing]})
    assert store.verify().ok
    assert store.recorded_fingerprints("img") == [FP, FP2] and store.recorded_fingerprints("imgs") == [FP]


def test_verify_reports_items_lost_under_a_fingerprint_the_dataset_was_extracted_with(store) -> None:
    k = keys(4)
    store.put_batch(FP, k[:3], np.ones((3, 4), np.float16), errors={k[3]: {"reason": "bad"}})
    store.put_manifest("ds", {"keys": [x.hex() for x in k]})
    with store.env.begin(write=True) as txn:
        txn.delete(bytes.fromhex(FP) + k[0], db=store._keys)
        txn.delete(bytes.fromhex(FP) + k[3], db=store._errors)
    report = store.verify()
    assert not report.ok and "2 items have neither a vector nor an error" in report.problems[0]
    assert "held all of them when the dataset was recorded" in report.problems[0]


def test_a_rerun_records_the_same_bytes_and_a_new_fingerprint(store) -> None:
    k = keys(3)
    manifest = {"keys": [x.hex() for x in k]}
    store.put_batch(FP, k, np.ones((3, 4), np.float16))
    store.put_manifest("ds", manifest)
    before = dict(store.env.begin().cursor(db=store._extracted))
    store.put_manifest("ds", manifest)
    assert dict(store.env.begin().cursor(db=store._extracted)) == before
    store.put_batch(FP2, k, np.ones((3, 4), np.float16))
    store.put_manifest("ds", manifest)
    assert store.recorded_fingerprints("ds") == [FP, FP2]
    store.prune(fingerprint=FP)
    assert store.recorded_fingerprints("ds") == [FP2] and store.verify().ok


def test_prune_fingerprint_and_dataset(store) -> None:
    store.register(FP, {}, 4, "float16")
    store.put_batch(FP, keys(5), np.ones((5, 4), np.float16))
    store.put_batch(FP2, keys(5), np.ones((5, 4), np.float16))
    store.put_manifest("ds", {"keys": []})
    assert store.prune(fingerprint=FP) > 0
    assert store.count(FP) == 0 and store.count(FP2) == 5 and FP not in store.fingerprints()
    store.prune(dataset="ds")
    assert store.datasets() == []


def test_prune_of_something_the_store_does_not_hold_is_an_error_listing_what_it_holds(store) -> None:
    store.put_batch(FP, keys(2), np.ones((2, 4), np.float16))
    store.put_manifest("ds", {"keys": [x.hex() for x in keys(2)]})
    with pytest.raises(StoreError, match=f"no fingerprint {FP2} .*fingerprints: {FP}"):
        store.prune(fingerprint=FP2)
    with pytest.raises(StoreError, match="no dataset called 'dz'.*datasets: 'ds'"):
        store.prune(fingerprint=FP, dataset="dz")
    assert store.count(FP) == 2  # the failed prune removed nothing, not even the fingerprint it knew
    with pytest.raises(StoreError, match="no dataset called ''"):
        store.prune(dataset="")
    with pytest.raises(StoreError, match="not 16 bytes of hex"):
        store.prune(fingerprint="zz")


REFUSED_NAMES = {
    "": "is empty or blank", " ": "is empty or blank",
    "../../evil": "path separator", "a/b": "path separator", "a\\b": "path separator",
    ".": "starts with a dot", "..": "starts with a dot", ".hidden": "starts with a dot",
    "tab\tname": "control character", "nul\x00": "control character", "del\x7f": "control character",
    "x" * 201: "longer than 200 bytes",
}


@pytest.mark.parametrize("name", sorted(REFUSED_NAMES))
def test_dataset_names_that_could_leave_the_cache_folder_are_refused(store, name: str) -> None:
    from hubtune.store import DatasetNameError

    for call in (lambda: store.put_manifest(name, {"keys": []}), lambda: store.manifest(name)):
        with pytest.raises(DatasetNameError, match=REFUSED_NAMES[name]) as raised:
            call()
        assert repr(name) in str(raised.value) and "pass one with --dataset NAME" in str(raised.value)
        assert raised.value.exit_code == 2
    assert store.datasets() == []


@pytest.mark.parametrize("name", ["train", "train-images_v2", "fotos ñ 写真", "a..b", "x" * 200])
def test_ordinary_dataset_names_are_accepted(store, name: str) -> None:
    store.put_manifest(name, {"keys": []})
    assert store.manifest(name) == {"keys": []}


def test_a_dataset_an_older_version_recorded_under_a_bad_name_can_be_listed_and_pruned(store) -> None:
    with store.env.begin(write=True) as txn:
        txn.put(b"../../evil", zlib.compress(b'{"keys":[]}'), db=store._manifests)
    assert [name for name, _ in store.manifests()] == ["../../evil"] and store.verify().ok
    assert store.prune(dataset="../../evil") == 1 and store.datasets() == []


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


def test_gather_chunks_stream_the_same_rows_checking_each_block_once(store, monkeypatch) -> None:
    import hubtune.store.lmdb_store as store_module

    rng = np.random.default_rng(3)
    k = keys(50)
    vectors = rng.standard_normal((50, 8)).astype(np.float16)
    for start in range(0, 50, 10):  # five blocks of ten
        store.put_batch(FP, k[start : start + 10], vectors[start : start + 10])
    order = rng.permutation(50)  # every piece touches several blocks
    locations = store.locate(FP, [k[i] for i in order])
    checked = []
    real_decode = store_module.decode_block
    monkeypatch.setattr(store_module, "decode_block",
                        lambda value, check=True: checked.append(check) or real_decode(value, check))
    buffers = [np.full((7, 8), np.nan, dtype=np.float32) for _ in range(2)]
    pieces = [piece.copy() for piece in store.gather_chunks(FP, locations, buffers)]
    assert [len(piece) for piece in pieces] == [7] * 7 + [1]
    np.testing.assert_array_equal(np.concatenate(pieces), vectors[order].astype(np.float32))
    assert checked.count(True) == 5  # one CRC per block, however many pieces it fed
    assert list(store.gather_chunks(FP, locations[:0], buffers)) == []
    with pytest.raises(KeyError):
        list(store.gather_chunks(FP, store.locate(FP, keys(1, "absent")), buffers))


def test_a_whole_dataset_scan_stops_at_the_end_of_its_fingerprint(store, monkeypatch) -> None:
    import hubtune.store.lmdb_store as store_module

    monkeypatch.setattr(store_module, "_SCAN_PAGE", 4)  # the run spans several pages and ends inside one
    low, high = "0" * 32, "f" * 32  # fingerprints sorting before and after FP
    k = keys(30)
    for fingerprint, scale in ((low, 1), (FP, 2), (high, 3)):
        store.put_batch(fingerprint, k[:13], np.full((13, 4), scale, dtype=np.float16))
    wanted = k[:13] + keys(5, "absent")  # enough keys to take the scan, five of them absent
    located = store.locate(FP, wanted)
    assert (located[13:] == -1).all() and (located[:13, 1] == np.arange(13)).all()
    np.testing.assert_array_equal(store.gather(FP, located[:13]), np.full((13, 4), 2, dtype=np.float32))


def _exportable(store, rows: int = 40, dim: int = 6) -> tuple[list[bytes], np.ndarray]:
    k = keys(rows)
    vectors = np.random.default_rng(5).standard_normal((rows, dim)).astype(np.float16)
    store.register(FP, {"source": "test", "model": "m"}, dim, "float16")
    for start in range(0, rows, 16):
        store.put_batch(FP, k[start : start + 16], vectors[start : start + 16])
    order = np.random.default_rng(6).permutation(rows).tolist() + [0]  # shuffled, one item twice
    store.put_manifest("d", {"keys": [k[i].hex() for i in order] + [keys(1, "gone")[0].hex()],
                             "labels": [str(i % 3) for i in order] + [None], "splits": ["train"] * (rows + 2),
                             "origins": [f"/x/{i}" for i in order] + ["/x/gone"]})
    return k, vectors[order].astype(np.float32)


def test_export_streams_in_pieces_and_keeps_dataset_order(store, tmp_path, monkeypatch) -> None:
    import json

    import hubtune.store.vectors as vectors_module

    k, expected = _exportable(store)
    monkeypatch.setattr(vectors_module, "_EXPORT_PIECE_BYTES", 6 * 4 * 3)  # three rows a piece
    result = vectors_module.export_dataset(store, FP, "d", tmp_path / "out")
    assert (result["rows"], result["missing"]) == (41, 1)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "embeddings.npy"), expected)
    lines = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    assert len(lines) == 41 and (lines[-1]["key"], lines[-1]["origin"]) == (k[0].hex(), "/x/0")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["embeddings.npy", "items.jsonl"]


def test_a_failed_export_leaves_the_previous_files_whole(store, tmp_path, monkeypatch, figure) -> None:
    import hubtune.store.vectors as vectors_module

    _, expected = _exportable(store)
    vectors_module.export_dataset(store, FP, "d", tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    monkeypatch.setattr(vectors_module, "_EXPORT_PIECE_BYTES", 6 * 4 * 3)

    def failing(self, fingerprint, locations, buffers):
        yield next(real(self, fingerprint, locations, buffers))
        raise OSError("disk went away")

    real = EmbeddingStore.gather_chunks
    monkeypatch.setattr(EmbeddingStore, "gather_chunks", failing)
    with pytest.raises(OSError, match="disk went away"):
        vectors_module.export_dataset(store, FP, "d", tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before  # no temporary left either
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "embeddings.npy"), expected)
    figure("failed export", f"an error after the first of {-(-41 // 3)} pieces: embeddings.npy and items.jsonl "
                            "byte-identical to the previous export's, no temporary file left")


def test_a_store_of_another_format_is_a_clear_error_and_a_new_one_is_stamped(tmp_path: Path) -> None:
    import lmdb

    from hubtune.errors import StoreError
    from hubtune.fingerprint import STORE_FORMAT_VERSION
    from hubtune.store import EmbeddingStore

    with EmbeddingStore(tmp_path / "new"):
        pass
    with EmbeddingStore(tmp_path / "new", readonly=True):  # stamped: opens again, read-only too
        pass
    old = lmdb.open(str(tmp_path / "old"), max_dbs=8)  # as hubtune wrote stores before the format was recorded
    old.open_db(b"fingerprints")
    old.close()
    with pytest.raises(StoreError, match=rf"has format 1 .*reads format {STORE_FORMAT_VERSION}.*Move it aside"):
        EmbeddingStore(tmp_path / "old")
    newer = lmdb.open(str(tmp_path / "newer"), max_dbs=8)
    with newer.begin(write=True) as txn:
        txn.put(b"format", b"99", db=newer.open_db(b"meta", txn=txn))
    newer.close()
    with pytest.raises(StoreError, match="has format 99"):
        EmbeddingStore(tmp_path / "newer", readonly=True)


def test_a_store_whose_stamping_was_cut_short_opens_as_new(tmp_path: Path) -> None:
    """A kill between creating the `meta` table and writing the format into it (they were two
    transactions) left a store every later open refused as "format ?"; an unstamped store with nothing
    in it is new, and stamping is now one transaction."""
    import lmdb

    from hubtune.store import EmbeddingStore

    cut = lmdb.open(str(tmp_path / "cut"), max_dbs=8)
    cut.open_db(b"meta")  # the table, no stamp: where the kill landed
    cut.close()
    with EmbeddingStore(tmp_path / "cut") as store:
        assert store.fingerprints() == {}
    with EmbeddingStore(tmp_path / "cut", readonly=True):  # stamped now
        pass


def test_handles_in_one_process_share_one_environment(tmp_path: Path) -> None:
    """LMDB allows one environment per store and process: a second handle (another thread's, serve's
    workers') shares it, threads write through their own handles at once, the last close closes it."""
    import threading

    path = tmp_path / "shared"
    first = EmbeddingStore(path)
    second = EmbeddingStore(path)  # would be "already open in this process" without sharing
    assert second.env is first.env
    errors: list[BaseException] = []

    def write(handle: EmbeddingStore, salt: str) -> None:
        try:
            for part in range(5):
                handle.put_batch(FP, keys(20, f"{salt}{part}"), np.full((20, 4), part, np.float32))
        except BaseException as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=write, args=(handle, salt)) for handle, salt in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and first.count(FP) == second.count(FP) == 200
    first.close()
    first.close()  # twice: still one release
    assert second.has(FP, keys(1, "a0")) == [True]  # the other handle still reads
    with EmbeddingStore(path, readonly=True) as reader:  # a read-only handle may share a writable one
        assert reader.count(FP) == 200
    second.close()
    with pytest.raises(Exception, match="closed|invalid|deleted"):
        second.env.stat()  # the last handle closed the environment
    with EmbeddingStore(path, readonly=True) as reader, pytest.raises(StoreError, match="read-only in this process"):
        EmbeddingStore(path)
    with EmbeddingStore(path) as reopened:
        assert reopened.count(FP) == 200
