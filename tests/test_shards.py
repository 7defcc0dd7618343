"""Shards without an engine: the files run_shard writes, reruns, plans, and the merge into the store."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyarrow")

from hubtune.backbone import LoadOptions  # noqa: E402
from hubtune.data import open_dataset  # noqa: E402
from hubtune.extract import extract  # noqa: E402
from hubtune.scale.merge import merge  # noqa: E402
from hubtune.scale.shards import ShardError, ShardRunner, read_items, read_plan, write_plan  # noqa: E402
from hubtune.store import EmbeddingStore  # noqa: E402

OPTIONS = LoadOptions(weights="random:3", device="cpu", precision="fp32")


@pytest.fixture
def planned(text_table, tmp_path: Path, tiny_bert_repo: str) -> tuple[Path, Path, str]:
    data = text_table(tmp_path / "reviews.jsonl", 40)
    ref = f"hf:{tiny_bert_repo}"
    write_plan(tmp_path / "shards", open_dataset(data), "reviews", ref, OPTIONS, "float16", shards=3)
    return data, tmp_path / "shards", ref


def _files(folder: Path, name: str) -> list[Path]:
    return [folder / "emb" / f"{name}.npy", folder / "meta" / f"{name}.parquet", folder / "_done" / f"{name}.json"]


def test_run_shard_writes_vectors_items_and_marker_last(planned: tuple[Path, Path, str]) -> None:
    import pyarrow.parquet as pq

    _, folder, _ = planned
    plan = read_plan(folder)
    assert plan.bounds == [[0, 13], [13, 26], [26, 40]] and plan.items == 40
    runner = ShardRunner(folder, batch_size=4)
    last = plan.shards[-1]  # holds the repeated text and the empty one
    marker = runner(last)
    vectors = np.load(folder / "emb" / "shard-000002.npy")
    meta = pq.read_table(folder / "meta" / "shard-000002.parquet").to_pydict()
    assert list(meta) == ["key", "origin", "label", "split", "status", "error"]
    assert meta["status"].count("failed") == 1 and "empty" in meta["error"][-1]
    assert vectors.dtype == np.float16 and vectors.shape == (13, 32)
    assert (marker["items"], marker["vectors"], marker["failed"], marker["dim"]) == (14, 13, 1, 32)
    emb, table, done = _files(folder, "shard-000002")
    assert done.stat().st_mtime_ns >= max(emb.stat().st_mtime_ns, table.stat().st_mtime_ns)
    assert not list(folder.rglob(".*"))  # no temporary file left behind
    # a fresh runner skips the done shard without loading the model
    fresh = ShardRunner(folder)
    assert fresh(last) == marker and fresh.backbone is None


def test_two_runs_of_a_shard_write_identical_bytes(planned: tuple[Path, Path, str]) -> None:
    _, folder, _ = planned
    shard = read_plan(folder).shards[1]
    ShardRunner(folder, batch_size=5)(shard)
    first = [path.read_bytes() for path in _files(folder, shard.name)]
    _files(folder, shard.name)[-1].unlink()  # no marker: the shard is redone
    ShardRunner(folder, batch_size=5)(shard)
    assert [path.read_bytes() for path in _files(folder, shard.name)] == first


def test_a_shard_decoded_elsewhere_writes_the_bytes_of_one_decoded_in_place(planned: tuple[Path, Path, str]) -> None:
    """``--decoders``: what a CPU decode actor packs and the embedding actor unpacks changes no byte."""
    from hubtune.scale.decode_stage import pack, unpack
    from hubtune.extract import prepare_items
    _, folder, _ = planned
    shard = read_plan(folder).shards[-1]  # holds the repeated text and the empty one
    runner = ShardRunner(folder, batch_size=4)
    runner(shard)
    in_place = [path.read_bytes() for path in _files(folder, shard.name)]
    _files(folder, shard.name)[-1].unlink()
    items = read_items(folder, shard)
    payload, errors = pack(prepare_items(runner.load().preprocessor, items))
    assert list(json.loads(errors)) == ["13"] and "empty" in json.loads(errors)["13"]
    runner(shard, unpack(items, payload, errors))
    assert [path.read_bytes() for path in _files(folder, shard.name)] == in_place
    with pytest.raises(ShardError, match="13 samples and 1 errors for 12 items"):
        unpack(items[:12], payload, errors)


def test_a_rerun_must_plan_the_same_thing(planned: tuple[Path, Path, str]) -> None:
    data, folder, ref = planned
    dataset = open_dataset(data)
    assert write_plan(folder, dataset, "reviews", ref, OPTIONS, "float16").bounds == read_plan(folder).bounds
    with pytest.raises(ShardError, match="another plan .*bounds"):
        write_plan(folder, dataset, "reviews", ref, OPTIONS, "float16", shards=4)
    with pytest.raises(ShardError, match="another plan .*options"):
        write_plan(folder, dataset, "reviews", ref, LoadOptions(weights="random:4", device="cpu"), "float16", shards=3)


def test_merge_gives_the_store_a_local_run_gives(planned: tuple[Path, Path, str], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hubtune.cli import cli

    data, folder, ref = planned
    runner = ShardRunner(folder, batch_size=4)
    plan = read_plan(folder)
    for shard in plan.shards[:2]:
        runner(shard)
    with EmbeddingStore(tmp_path / "merged") as store, pytest.raises(ShardError, match="1 of 3 shards .* not done"):
        merge(folder, store)
    runner(plan.shards[2])
    result = CliRunner().invoke(cli, ["merge", "--shards", str(folder), "--cache", str(tmp_path / "merged"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["items"], summary["vectors"], summary["written"], summary["failed"]) == (40, 39, 38, 1)
    with EmbeddingStore(tmp_path / "local") as local, EmbeddingStore(tmp_path / "merged") as merged:
        expected = extract(ref, data, local, options=OPTIONS, batch_size=8, progress=False)
        assert summary["fingerprint"] == expected.fingerprint
        assert merged.manifest("reviews") == local.manifest("reviews")
        assert merged.errors(expected.fingerprint) == local.errors(expected.fingerprint)
        keys = [bytes.fromhex(k) for k in local.manifest("reviews")["keys"][:-1]]
        np.testing.assert_allclose(merged.get(expected.fingerprint, keys), local.get(expected.fingerprint, keys),
                                   rtol=2e-3, atol=2e-3)  # float16 rounding of two batchings
        assert merged.verify().ok


def test_merge_refuses_a_damaged_shard(planned: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, folder, _ = planned
    runner = ShardRunner(folder)
    for shard in read_plan(folder).shards:
        runner(shard)
    emb = folder / "emb" / "shard-000001.npy"
    emb.write_bytes(emb.read_bytes()[:-2] + b"\x00\x01")
    with EmbeddingStore(tmp_path / "store") as store, pytest.raises(ShardError, match="shard-000001.npy .*sha256"):
        merge(folder, store)


def test_a_row_that_is_not_utf8_travels_in_the_plan_as_its_bytes(tmp_path: Path, tiny_bert_repo: str) -> None:
    data = tmp_path / "mixed.jsonl"
    data.write_bytes(b'{"text": "fine", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n')
    plan = write_plan(tmp_path / "shards", open_dataset(data), "mixed", f"hf:{tiny_bert_repo}", OPTIONS, "float16",
                      shards=1)
    (shard,) = plan.shards
    assert read_items(tmp_path / "shards", shard) == open_dataset(data).items()
    assert read_items(tmp_path / "shards", shard)[1].data == b'{"text": "caf\xe9", "label": "b"}'
