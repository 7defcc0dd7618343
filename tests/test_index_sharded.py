"""A sharded IVF build (train once, add shards with real ids, merge on disk) == a one-piece build."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

pytest.importorskip("pyarrow")

from click.testing import CliRunner  # noqa: E402

from hubtune import index as faiss_index  # noqa: E402
from hubtune.backbone import LoadOptions  # noqa: E402
from hubtune.cli import cli  # noqa: E402
from hubtune.data import open_dataset  # noqa: E402
from hubtune.index.sharded import _gather, load_sharded  # noqa: E402
from hubtune.scale.shards import ShardRunner, read_plan, write_plan  # noqa: E402

OPTIONS = LoadOptions(weights="random:3", device="cpu", precision="fp32")


@pytest.mark.slow
def test_sharded_build_and_merge_give_the_neighbours_of_a_one_piece_index(tmp_path: Path, tiny_bert_repo: str) -> None:
    table = tmp_path / "words.jsonl"
    table.write_text("".join(json.dumps({"text": f"item {i} word{i % 97} other{i % 13} tail{i % 7}"}) + "\n"
                             for i in range(2000)) + json.dumps({"text": ""}) + "\n")  # the last one fails
    shards = tmp_path / "shards"
    write_plan(shards, open_dataset(table), "words", f"hf:{tiny_bert_repo}", OPTIONS, "float16", shards=5)
    runner = ShardRunner(shards, batch_size=64)
    plan = read_plan(shards)
    for shard in plan.shards:
        runner(shard)
    vectors = np.concatenate([np.load(shards / "emb" / f"{s.name}.npy") for s in plan.shards]).astype(np.float32)
    assert vectors.shape == (2000, 32)
    starts = np.array([0, *np.cumsum([len(np.load(shards / "emb" / f"{s.name}.npy")) for s in plan.shards])])
    picked = np.random.default_rng(1).choice(2000, 300, replace=False)
    np.testing.assert_array_equal(_gather(shards, [s.name for s in plan.shards], starts, picked, 32), vectors[picked])

    result = CliRunner().invoke(cli, ["index", "build-sharded", "--shards", str(shards), "--out", str(tmp_path / "built"),
                                      "--kind", "ivf", "--json"])
    assert result.exit_code == 0, result.output
    built = json.loads(result.stdout)  # faiss' own progress lines kept off stdout
    assert (built["kind"], built["rows"], built["shards"]) == ("ivf", 2000, 5)
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "built", moved)  # the merged index finds its .ivfdata beside it
    loaded = load_sharded(moved, shards)
    assert loaded is not None
    sharded, spec = loaded
    assert 1 < spec.nprobe < spec.nlist  # a real IVF search, not an exhaustive one

    whole = faiss_index.build(vectors, spec)
    queries = vectors[::97]
    got_scores, got_ids = faiss_index.search(sharded, queries, 10, "cosine")
    want_scores, want_ids = faiss_index.search(whole, queries, 10, "cosine")
    np.testing.assert_array_equal(got_ids, want_ids)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-5, atol=1e-6)
    lists = faiss.extract_index_ivf(sharded).invlists  # real ids: every row once, across all shards
    ids = np.concatenate([faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy() for i in range(spec.nlist)])
    np.testing.assert_array_equal(np.sort(ids), np.arange(2000))
