"""The CLI contract for extract / export / cache, and extractor details (shards, OOM back-off)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch


MODEL_ARGS = ["--weights", "random:5", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture
def text_folder(tmp_path: Path) -> Path:
    root = tmp_path / "reviews"
    for label, texts in {"pos": ["great film", "loved it", "wonderful acting"], "neg": ["dull", "a waste of time"]}.items():
        (root / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / label / f"{i}.txt").write_text(text, encoding="utf-8")
    (root / "neg" / "latin1.txt").write_bytes("d\xe9cevant, tr\xe8s long".encode("latin-1"))
    (root / "neg" / "empty.txt").write_bytes(b"")
    return root


def test_extract_export_and_cache_commands(run_hubtune, text_folder: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    model = "hf:sentence-transformers/all-MiniLM-L6-v2"
    first = json.loads(run_hubtune("extract", model, str(text_folder), "--cache", cache, "--json",
                                   "--no-progress").stdout)
    assert set(first) >= {"dataset", "total", "computed", "cached", "failed", "items_per_s"}
    assert (first["dataset"], first["total"], first["computed"], first["failed"]) == ("reviews", 7, 5, 2)
    second = run_hubtune("extract", model, str(text_folder), "--cache", cache, "--json", "--no-progress")
    again = json.loads(second.stdout)
    assert (again["computed"], again["cached"], again["failed"]) == (0, 5, 2)
    assert "2 items failed; see them with: hubtune cache errors" in second.stderr

    errors = json.loads(run_hubtune("cache", "errors", "--cache", cache, "--dataset", "reviews", "--json").stdout)
    reasons = {Path(row["origin"]).name: row["reason"] for row in errors}
    assert reasons.keys() == {"latin1.txt", "empty.txt"}
    assert "UTF-8" in reasons["latin1.txt"] and "empty text" in reasons["empty.txt"]

    out = tmp_path / "export"
    exported = json.loads(run_hubtune("export", "--cache", cache, "--model", model, "--dataset", "reviews",
                                      "--out", str(out), "--json").stdout)
    assert exported["rows"] == 5 and exported["dim"] == 384 and exported["missing"] == 2
    assert np.load(out / "embeddings.npy").shape == (5, 384)
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert all(set(row) == {"key", "label", "split", "origin"} for row in rows)
    assert [row["label"] for row in rows] == ["neg", "neg", "pos", "pos", "pos"]

    listing = json.loads(run_hubtune("cache", "ls", "--cache", cache, "--json").stdout)
    (entry,) = listing["fingerprints"]
    assert entry["vectors"] == 5 and entry["errors"] == 2 and entry["bytes"] == 5 * 384 * 2
    assert listing["datasets"] == [{"name": "reviews", "items": 7}]
    verified = json.loads(run_hubtune("cache", "verify", "--cache", cache, "--json").stdout)
    assert verified["ok"] and verified["vectors"] == 5

    pruned = run_hubtune("cache", "prune", "--cache", cache, "--fingerprint", entry["fingerprint"], "--json")
    assert json.loads(pruned.stdout)["removed"] > 0
    assert json.loads(run_hubtune("cache", "ls", "--cache", cache, "--json").stdout)["fingerprints"] == []


def test_cache_verify_exits_non_zero_on_damage(run_hubtune, make_image_folder, tmp_path: Path) -> None:
    from hubtune.store import EmbeddingStore

    data = make_image_folder(tmp_path / "images", per_class=2)
    cache = tmp_path / "cache"
    run_hubtune("extract", "timm:test_resnet", str(data), "--cache", str(cache), *MODEL_ARGS, "--no-progress")
    with EmbeddingStore(cache) as store:
        (fingerprint,) = store.fingerprints()
        key = bytes.fromhex(fingerprint) + (0).to_bytes(8, "big")
        with store.env.begin(write=True) as txn:
            value = bytearray(txn.get(key, db=store._blocks))
            value[-3] ^= 0x55
            txn.put(key, bytes(value), db=store._blocks)
    result = run_hubtune("cache", "verify", "--cache", str(cache), check=False)
    assert result.returncode == 1 and "CRC32" in result.stdout


def test_export_asks_which_fingerprint_when_several_match(run_hubtune, make_image_folder, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=2)
    cache = str(tmp_path / "cache")
    for layer in ("layer2", "layer3"):
        run_hubtune("extract", "timm:test_resnet", str(data), "--cache", cache, *MODEL_ARGS, "--layer", layer,
                    "--no-progress")
    result = run_hubtune("export", "--cache", cache, "--model", "timm:test_resnet", "--dataset", "images", "--out",
                         str(tmp_path / "o"), "--weights", "random:5", check=False)
    assert result.returncode == 2 and "2 sets of vectors" in result.stderr and "layer layer2" in result.stderr
    run_hubtune("export", "--cache", cache, "--model", "timm:test_resnet", "--dataset", "images", "--out",
                str(tmp_path / "o"), "--weights", "random:5", "--layer", "layer3")
    assert np.load(tmp_path / "o" / "embeddings.npy").shape[0] == 4


def test_shards_cover_the_dataset(make_image_folder, tmp_path: Path) -> None:
    from hubtune.backbone import LoadOptions
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore

    data = make_image_folder(tmp_path / "images", per_class=5)
    options = LoadOptions(weights="random:5", device="cpu", precision="fp32")
    with EmbeddingStore(tmp_path / "store") as store:
        first = extract("timm:test_resnet", data, store, options=options, shard=(0, 4), progress=False)
        assert (first.total, first.computed) == (4, 4) and store.datasets() == []  # no manifest from a shard
        second = extract("timm:test_resnet", data, store, options=options, shard=(4, 10), progress=False)
        assert (second.total, second.computed) == (6, 6)
        whole = extract("timm:test_resnet", data, store, options=options, progress=False)
        assert (whole.computed, whole.cached) == (0, 10) and store.datasets() == ["images"]


class _OOMOnceBackbone:
    """Raises CUDA out-of-memory for batches over 3 rows; records the sizes it was given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def embed_batch(self, batch: dict) -> torch.Tensor:
        rows = len(batch["x"])
        self.sizes.append(rows)
        if rows > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return batch["x"].float()


def test_out_of_memory_halves_the_batch_and_keeps_order() -> None:
    from hubtune.extract.streams import _embed

    backbone = _OOMOnceBackbone()
    limit = [8]
    x = torch.arange(10).reshape(10, 1)
    out = _embed(backbone, {"x": x}, limit)
    assert out.flatten().tolist() == list(range(10))
    assert limit == [2] and backbone.sizes[:3] == [8, 4, 2]


# -- cache commands over a store of fake vectors (no model) -------------------------------------------------
FP_A, FP_B = "a" * 32, "b" * 32


def invoke(*args: str):
    from click.testing import CliRunner

    from hubtune.cli import cli

    return CliRunner().invoke(cli, list(args))


def fake_store(cache: Path) -> dict[str, bytes]:
    """Datasets `one` and `two` share an empty file (one error record, stored with `one`'s origin);
    `two` holds it twice, under two names."""
    from hubtune.store import EmbeddingStore

    keys = {name: bytes([i]) * 16 for i, name in enumerate(["good", "empty", "broken"])}
    with EmbeddingStore(cache) as store:
        store.register(FP_A, {"source": "test", "model": "m"}, 4, "float16")
        store.put_batch(FP_A, [keys["good"]], np.ones((1, 4), np.float16), errors={
            keys["empty"]: {"reason": "empty file", "origin": "/one/empty.txt"},
            keys["broken"]: {"reason": "truncated", "origin": "/one/broken.txt"},
        })
        store.put_manifest("one", {"keys": [keys[k].hex() for k in ("good", "empty", "broken")],
                                   "origins": ["/one/good.txt", "/one/empty.txt", "/one/broken.txt"]})
        store.put_manifest("two", {"keys": [keys[k].hex() for k in ("good", "empty", "empty")],
                                   "origins": ["/two/good.txt", "/two/blank.txt", "/two/blank-copy.txt"]})
    return keys


def test_cache_errors_of_a_dataset_shows_its_own_files(tmp_path: Path) -> None:
    fake_store(tmp_path / "cache")
    result = invoke("cache", "errors", "--cache", str(tmp_path / "cache"), "--dataset", "two", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(row["origin"] for row in json.loads(result.stdout)) == ["/two/blank-copy.txt", "/two/blank.txt"]
    everything = json.loads(invoke("cache", "errors", "--cache", str(tmp_path / "cache"), "--json").stdout)
    assert sorted(row["origin"] for row in everything) == ["/one/broken.txt", "/one/empty.txt"]
    refused = invoke("cache", "errors", "--cache", str(tmp_path / "cache"), "--dataset", "")
    assert refused.exit_code == 2 and "dataset name '' is empty" in refused.output


def test_cache_prune_refuses_what_is_not_there_and_drops_a_datasets_indexes(tmp_path: Path) -> None:
    from hubtune import index as ix

    cache = tmp_path / "cache"
    fake_store(cache)
    spec = ix.choose_spec(2, 4)
    for dataset in ("one", "two"):
        ix.save(ix.build(np.eye(2, 4, dtype=np.float32), spec), cache / "indexes" / f"{dataset}-{FP_A[:16]}.faiss",
                spec, {"fingerprint": FP_A, "dataset": dataset})
    unknown = invoke("cache", "prune", "--cache", str(cache), "--dataset", "three")
    assert unknown.exit_code == 1 and "no dataset called 'three'" in unknown.output and "'one', 'two'" in unknown.output
    unknown = invoke("cache", "prune", "--cache", str(cache), "--fingerprint", FP_B)
    assert unknown.exit_code == 1 and f"no fingerprint {FP_B}" in unknown.output and FP_A in unknown.output

    pruned = invoke("cache", "prune", "--cache", str(cache), "--dataset", "one", "--json")
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.stdout) == {"removed": 1, "indexes": [str(cache / "indexes" / f"one-{FP_A[:16]}.faiss")]}
    assert sorted(p.name for p in (cache / "indexes").iterdir()) == [f"two-{FP_A[:16]}.faiss", f"two-{FP_A[:16]}.faiss.json"]
    pruned = invoke("cache", "prune", "--cache", str(cache), "--fingerprint", FP_A)
    assert pruned.exit_code == 0 and "1 index files" in pruned.output and not any((cache / "indexes").iterdir())


def test_verify_after_pruning_a_fingerprint_the_dataset_was_extracted_with(tmp_path: Path) -> None:
    fake_store(tmp_path / "cache")
    assert invoke("cache", "verify", "--cache", str(tmp_path / "cache")).exit_code == 0
    invoke("cache", "prune", "--cache", str(tmp_path / "cache"), "--fingerprint", FP_A)
    assert invoke("cache", "verify", "--cache", str(tmp_path / "cache")).exit_code == 0


@pytest.mark.parametrize("name", ["../../evil", "a/b", "", ".hidden"])
def test_dataset_names_that_could_leave_the_cache_are_refused_before_any_work(tmp_path: Path, name: str) -> None:
    data = tmp_path / "t.jsonl"
    data.write_text('{"text": "hi"}\n')
    cache = tmp_path / "work" / "cache"
    extract = invoke("extract", "hf:nobody/no-model", str(data), "--cache", str(cache), "--dataset", name)
    assert extract.exit_code == 2 and f"dataset name {name!r}" in extract.output and "--dataset NAME" in extract.output
    index = invoke("index", "build", "--cache", str(cache), "--model", "hf:nobody/no-model", "--dataset", name)
    assert index.exit_code == 2 and f"Error: dataset name {name!r}" in index.output
    assert "Traceback" not in index.output
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["data.mdb", "lock.mdb", "t.jsonl"]


def test_verify_judges_a_subset_only_under_the_fingerprint_it_was_extracted_with(make_image_folder,
                                                                                 tmp_path: Path) -> None:
    """The acceptance case: `images` under two layers, then `subset` (some of its files and a missing
    one) under the default layer only; no fingerprint that merely shares files makes it damaged."""
    data = make_image_folder(tmp_path / "images", per_class=2)
    subset = tmp_path / "subset.jsonl"
    files = sorted(data.rglob("*.png"))[:3] + [data / "missing.png"]
    subset.write_text("".join(json.dumps({"path": str(path), "label": "x"}) + "\n" for path in files))
    cache = str(tmp_path / "cache")
    for args in ((str(data),), (str(data), "--layer", "layer3"), (str(subset),)):
        result = invoke("extract", "timm:test_resnet", *args, "--cache", cache, *MODEL_ARGS, "--no-progress")
        assert result.exit_code == 0, result.output
    verified = invoke("cache", "verify", "--cache", cache, "--json")
    assert verified.exit_code == 0 and json.loads(verified.stdout)["problems"] == []
