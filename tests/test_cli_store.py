"""The CLI contract for extract / export / cache, and extractor details (shards, OOM back-off)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_cli import hubtune
from tests.test_extract import make_image_folder

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


def test_extract_export_and_cache_commands(text_folder: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    model = "hf:sentence-transformers/all-MiniLM-L6-v2"
    first = json.loads(hubtune("extract", model, str(text_folder), "--cache", cache, "--json", "--no-progress").stdout)
    assert set(first) >= {"dataset", "total", "computed", "cached", "failed", "items_per_s"}
    assert (first["dataset"], first["total"], first["computed"], first["failed"]) == ("reviews", 7, 5, 2)
    second = hubtune("extract", model, str(text_folder), "--cache", cache, "--json", "--no-progress")
    again = json.loads(second.stdout)
    assert (again["computed"], again["cached"], again["failed"]) == (0, 5, 2)
    assert "2 items failed; see them with: hubtune cache errors" in second.stderr

    errors = json.loads(hubtune("cache", "errors", "--cache", cache, "--dataset", "reviews", "--json").stdout)
    reasons = {Path(row["origin"]).name: row["reason"] for row in errors}
    assert reasons.keys() == {"latin1.txt", "empty.txt"}
    assert "UTF-8" in reasons["latin1.txt"] and "empty text" in reasons["empty.txt"]

    out = tmp_path / "export"
    exported = json.loads(hubtune("export", "--cache", cache, "--model", model, "--dataset", "reviews",
                                  "--out", str(out), "--json").stdout)
    assert exported["rows"] == 5 and exported["dim"] == 384 and exported["missing"] == 2
    assert np.load(out / "embeddings.npy").shape == (5, 384)
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert all(set(row) == {"key", "label", "split", "origin"} for row in rows)
    assert [row["label"] for row in rows] == ["neg", "neg", "pos", "pos", "pos"]

    listing = json.loads(hubtune("cache", "ls", "--cache", cache, "--json").stdout)
    (entry,) = listing["fingerprints"]
    assert entry["vectors"] == 5 and entry["errors"] == 2 and entry["bytes"] == 5 * 384 * 2
    assert listing["datasets"] == [{"name": "reviews", "items": 7}]
    verified = json.loads(hubtune("cache", "verify", "--cache", cache, "--json").stdout)
    assert verified["ok"] and verified["vectors"] == 5

    pruned = hubtune("cache", "prune", "--cache", cache, "--fingerprint", entry["fingerprint"], "--json")
    assert json.loads(pruned.stdout)["removed"] > 0
    assert json.loads(hubtune("cache", "ls", "--cache", cache, "--json").stdout)["fingerprints"] == []


def test_cache_verify_exits_non_zero_on_damage(tmp_path: Path) -> None:
    from hubtune.store import EmbeddingStore

    data = make_image_folder(tmp_path / "images", per_class=2)
    cache = tmp_path / "cache"
    hubtune("extract", "timm:test_resnet", str(data), "--cache", str(cache), *MODEL_ARGS, "--no-progress")
    with EmbeddingStore(cache) as store:
        (fingerprint,) = store.fingerprints()
        key = bytes.fromhex(fingerprint) + (0).to_bytes(8, "big")
        with store.env.begin(write=True) as txn:
            value = bytearray(txn.get(key, db=store._blocks))
            value[-3] ^= 0x55
            txn.put(key, bytes(value), db=store._blocks)
    result = hubtune("cache", "verify", "--cache", str(cache), check=False)
    assert result.returncode == 1 and "CRC32" in result.stdout


def test_export_asks_which_fingerprint_when_several_match(tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=2)
    cache = str(tmp_path / "cache")
    for layer in ("layer2", "layer3"):
        hubtune("extract", "timm:test_resnet", str(data), "--cache", cache, *MODEL_ARGS, "--layer", layer, "--no-progress")
    result = hubtune("export", "--cache", cache, "--model", "timm:test_resnet", "--dataset", "images", "--out",
                     str(tmp_path / "o"), "--weights", "random:5", check=False)
    assert result.returncode == 2 and "2 sets of vectors" in result.stderr and "layer layer2" in result.stderr
    hubtune("export", "--cache", cache, "--model", "timm:test_resnet", "--dataset", "images", "--out",
            str(tmp_path / "o"), "--weights", "random:5", "--layer", "layer3")
    assert np.load(tmp_path / "o" / "embeddings.npy").shape[0] == 4


def test_shards_cover_the_dataset(tmp_path: Path) -> None:
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
    from hubtune.extract import _embed

    backbone = _OOMOnceBackbone()
    limit = [8]
    x = torch.arange(10).reshape(10, 1)
    out = _embed(backbone, {"x": x}, limit)
    assert out.flatten().tolist() == list(range(10))
    assert limit == [2] and backbone.sizes[:3] == [8, 4, 2]
