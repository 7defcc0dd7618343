"""``extract --engine ray`` on a local Ray cluster and on two simulated nodes.

One Ray instance serves the module (Ray starts in seconds, not milliseconds); the two-node test
shuts it down and starts its own cluster, so it runs last. Vectors are compared with a plain
``hubtune extract`` of the same data: both store float16, so they agree to float16 rounding.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from click.testing import CliRunner  # noqa: E402

from hubtune.backbone import LoadOptions  # noqa: E402
from hubtune.cli import cli  # noqa: E402
from hubtune.data import open_dataset  # noqa: E402
from hubtune.scale.driver import extract_sharded  # noqa: E402
from hubtune.scale.shards import ShardRunner, read_plan, write_plan  # noqa: E402
from hubtune.store import EmbeddingStore  # noqa: E402

pytestmark = pytest.mark.slow
MODEL_ARGS = ["--weights", "random:3", "--device", "cpu", "--precision", "fp32", "--no-progress", "--json"]
OPTIONS = LoadOptions(weights="random:3", device="cpu", precision="fp32")  # what MODEL_ARGS says
RAY_ENV = {"RAY_DEDUP_LOGS": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_IMPORT_WARNING": "1"}
RAY_ARGS = dict(include_dashboard=False, object_store_memory=150 << 20, log_to_driver=False)


def run(*args: str) -> dict:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def local_ray():
    os.environ.update(RAY_ENV)
    ray.shutdown()
    ray.init(num_cpus=4, **RAY_ARGS)  # more logical CPUs than cores, or Ray Data's pipeline can starve
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reviews(text_table, tmp_path_factory: pytest.TempPathFactory, tiny_bert_repo: str) -> tuple[Path, str, Path]:
    """300 text items and a plain (local engine) extract of them."""
    root = tmp_path_factory.mktemp("reviews")
    data = text_table(root / "reviews.jsonl", 300)
    ref = f"hf:{tiny_bert_repo}"
    run("extract", ref, str(data), "--cache", str(root / "plain"), "--batch-size", "16", *MODEL_ARGS)
    return data, ref, root / "plain"


def test_ray_extract_matches_a_plain_run_and_reruns_skip_done_shards(assert_same_store, local_ray, reviews,
                                                                     tmp_path: Path) -> None:
    data, ref, plain = reviews
    shards = tmp_path / "shards"
    # an interrupted earlier run: the plan written and its first two shards done
    write_plan(shards, open_dataset(data), "reviews", ref, OPTIONS, "float16", shards=6)
    runner = ShardRunner(shards, batch_size=16)
    for shard in read_plan(shards).shards[:2]:
        runner(shard)
    args = ["extract", ref, str(data), "--engine", "ray", "--shards", "6", "--workers", "2", "--batch-size", "16",
            "--cache", str(tmp_path / "cache"), "--shards-dir", str(shards), *MODEL_ARGS]
    first = run(*args)
    assert (first["total"], first["shards_run"], first["computed"], first["cached"], first["failed"]) == (300, 4, 199, 100, 1)
    assert first["merged"] and len(list((shards / "_done").glob("shard-*.json"))) == 6
    assert_same_store(tmp_path / "cache", plain, "reviews")
    again = run(*args)
    assert (again["shards_run"], again["computed"], again["cached"]) == (0, 0, 300)
    assert_same_store(tmp_path / "cache", plain, "reviews")


def _actor_pids() -> list[int]:
    """This machine's Ray Data actors running hubtune's shard class (their process title names it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker" in title and b"_ShardActor" in title:
                pids.append(int(entry.name))
    return pids


def test_killing_an_actor_mid_run_still_completes(make_image_folder, local_ray, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=24)
    shards = tmp_path / "shards"
    outcome: dict = {}

    def drive() -> None:
        outcome.update(extract_sharded("ray", "timm:test_resnet", data, cache=tmp_path / "cache", shards_dir=shards,
                                       options=OPTIONS, shards=8, workers=2, batch_size=4, progress=False).as_dict())

    driver = threading.Thread(target=drive)
    driver.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and driver.is_alive():
        done = len(list((shards / "_done").glob("*.json"))) if (shards / "_done").is_dir() else 0
        pids = _actor_pids()
        if done >= 1 and pids:
            assert done < 8, "every shard finished before an actor could be killed"
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    driver.join(timeout=300)
    assert killed is not None, "no actor to kill was found while shards were pending"
    assert outcome["total"] == 48 and outcome["merged"] and outcome["failed"] == 0
    assert len(list((shards / "_done").glob("*.json"))) == 8
    with EmbeddingStore(tmp_path / "cache", readonly=True) as store:
        (fingerprint,) = store.fingerprints()
        assert store.count(fingerprint) == 48 and store.verify().ok


def test_two_node_cluster_matches_a_plain_run(assert_same_store, reviews, tmp_path: Path) -> None:
    from ray.cluster_utils import Cluster

    data, ref, plain = reviews
    ray.shutdown()  # the module's local instance: this test brings its own cluster
    os.environ.update(RAY_ENV)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3, "include_dashboard": False,
                                                            "object_store_memory": 150 << 20})
    try:
        cluster.add_node(num_cpus=3, object_store_memory=150 << 20)
        ray.init(address=cluster.address, log_to_driver=False)
        assert len([node for node in ray.nodes() if node["Alive"]]) == 2
        # 2 CPUs per actor on 3-CPU nodes: one actor per node, each with a DataLoader worker
        summary = run("extract", ref, str(data), "--engine", "ray", "--shards", "4", "--workers", "2",
                      "--cpus-per-worker", "2", "--batch-size", "16", "--cache", str(tmp_path / "cache"), *MODEL_ARGS)
        assert (summary["total"], summary["shards_run"]) == (300, 4)
        assert summary["shards_dir"] is None and not (tmp_path / "cache" / "shards-tmp").joinpath("reviews").exists()
        assert_same_store(tmp_path / "cache", plain, "reviews")
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_decoding_runs_on_cpu_only_nodes_and_matches_a_plain_run(assert_same_store, reviews, tmp_path: Path) -> None:
    """``--decoders``: decode actors on a CPU-only node feed embedding actors on a (simulated) GPU node."""
    from ray.cluster_utils import Cluster

    from hubtune.scale import ray_engine
    from hubtune.scale.merge import merge

    data, ref, plain = reviews
    ray.shutdown()
    os.environ.update(RAY_ENV)
    # the "GPU node" offers no CPU, so a decode actor can only land on the CPU-only node
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "num_gpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 150 << 20})
    try:
        cpu_node = cluster.add_node(num_cpus=3, object_store_memory=150 << 20)
        ray.init(address=cluster.address, log_to_driver=False)
        folder = tmp_path / "shards"
        plan = write_plan(folder, open_dataset(data), "reviews", ref, OPTIONS, "float16", shards=4)
        rows = ray_engine.run(folder, plan, workers=1, gpus_per_worker=1, cpus_per_worker=0, decoders=2,
                              batch_size=16, progress=False)
        assert sorted(row["shard"] for row in rows) == [0, 1, 2, 3]
        assert {row["decoded_on"] for row in rows} == {cpu_node.node_id}
        assert {row["embedded_on"] for row in rows} == {cluster.head_node.node_id}
        with EmbeddingStore(tmp_path / "cache") as store:
            merge(folder, store)
        assert_same_store(tmp_path / "cache", plain, "reviews")
    finally:
        ray.shutdown()
        cluster.shutdown()
