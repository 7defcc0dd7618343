"""The extractor and export: order, parity with the backbone, dedupe, separation, bad input."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

import hubtune
from hubtune.extract import extract
from hubtune.store import EmbeddingStore
from hubtune.store.lookup import find_fingerprint
from hubtune.store.vectors import export_dataset, load_dataset_vectors

MODEL = "timm:test_resnet"
RANDOM = dict(weights="random:5", device="cpu", precision="fp32")


def options(**overrides):
    from hubtune.backbone import LoadOptions

    return LoadOptions(**{**RANDOM, **overrides})


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "dataloader-workers"])
def test_export_order_and_values_match_the_backbone(make_image_folder, tmp_path: Path, workers: int) -> None:
    data = make_image_folder(tmp_path / "images")
    with EmbeddingStore(tmp_path / "store") as store:
        summary = extract(MODEL, data, store, dataset_name="pets", options=options(), batch_size=4, workers=workers,
                          progress=False)
        assert (summary.total, summary.computed, summary.cached, summary.failed) == (12, 12, 0, 0)
        fingerprint = find_fingerprint(store, MODEL, "pets", options())
        result = export_dataset(store, fingerprint, "pets", tmp_path / "out")
    assert result["rows"] == 12 and result["dim"] == 96
    rows = [json.loads(line) for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    expected_paths = sorted(str(p.resolve()) for p in data.rglob("*.png"))
    assert [row["origin"] for row in rows] == expected_paths  # dataset order: class folders, then files
    assert [row["label"] for row in rows] == ["cat"] * 6 + ["dog"] * 6
    exported = np.load(tmp_path / "out" / "embeddings.npy")
    assert exported.dtype == np.float32
    direct = hubtune.load_backbone(MODEL, **RANDOM).embed([Path(p).read_bytes() for p in expected_paths])
    np.testing.assert_allclose(exported, direct.astype(np.float16).astype(np.float32), rtol=1e-3, atol=1e-3)


def test_second_run_computes_nothing_and_does_not_load_the_model(make_image_folder, tmp_path: Path,
                                                                 monkeypatch) -> None:
    data = make_image_folder(tmp_path / "images")
    with EmbeddingStore(tmp_path / "store") as store:
        extract(MODEL, data, store, options=options(), progress=False)

        def no_loading(*args, **kwargs):
            raise AssertionError("the model was loaded although everything is cached")

        monkeypatch.setattr("hubtune.api.load_backbone", no_loading)
        again = extract(MODEL, data, store, options=options(), progress=False)
    assert (again.computed, again.cached) == (0, 12)


def test_shared_files_are_stored_once(make_image_folder, tmp_path: Path) -> None:
    first = make_image_folder(tmp_path / "a", per_class=4)
    second = make_image_folder(tmp_path / "b", per_class=6)  # same seeds: 4 per class shared with `first`
    with EmbeddingStore(tmp_path / "store") as store:
        one = extract(MODEL, first, store, dataset_name="a", options=options(), progress=False)
        two = extract(MODEL, second, store, dataset_name="b", options=options(), progress=False)
        assert one.computed == 8 and two.computed == 4 and two.cached == 8
        assert store.count(one.fingerprint) == 12
        assert sorted(store.datasets()) == ["a", "b"]


@pytest.mark.parametrize("change", [{"layer": "layer2"}, {"pool": "max", "layer": "features"}, {"precision": "bf16"}])
def test_other_layer_pool_or_precision_gets_separate_vectors(make_image_folder, tmp_path: Path, change: dict) -> None:
    data = make_image_folder(tmp_path / "images", per_class=2)
    with EmbeddingStore(tmp_path / "store") as store:
        base = extract(MODEL, data, store, options=options(), progress=False)
        other = extract(MODEL, data, store, options=options(**change), progress=False)
        assert other.fingerprint != base.fingerprint and other.computed == 4
        assert len(store.fingerprints()) == 2


def test_other_preprocessing_gets_separate_vectors(make_image_folder, tmp_path: Path) -> None:
    from timm.data import create_transform

    data = make_image_folder(tmp_path / "images", per_class=2)
    with EmbeddingStore(tmp_path / "store") as store:
        base = extract(MODEL, data, store, options=options(), progress=False)
        backbone = hubtune.load_backbone(MODEL, **RANDOM)
        config = {**backbone.preprocess_config, "crop_pct": 0.5}
        backbone.preprocess_config = config
        backbone.preprocessor.transform = create_transform(
            input_size=tuple(config["input_size"]), interpolation=config["interpolation"], mean=tuple(config["mean"]),
            std=tuple(config["std"]), crop_pct=0.5, crop_mode=config["crop_mode"])
        other = extract(MODEL, data, store, backbone=backbone, progress=False)
        assert other.fingerprint != base.fingerprint and other.computed == 4


def _png_claiming_pixels(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_malformed_files_get_error_records_and_good_ones_are_stored(make_image_folder, png, tmp_path: Path) -> None:
    root = make_image_folder(tmp_path / "images", per_class=3)
    bad = {
        "zero.png": b"",
        "truncated.png": png(1)[:60],
        "random.jpg": np.random.default_rng(3).bytes(500),
        "text.jpg": b"this is not an image",
        "bomb.png": _png_claiming_pixels(40_000, 40_000),
    }
    for name, content in bad.items():
        (root / "cat" / name).write_bytes(content)
    with EmbeddingStore(tmp_path / "store") as store:
        summary = extract(MODEL, root, store, options=options(), batch_size=4, progress=False)
        assert (summary.total, summary.computed, summary.failed) == (11, 6, 5)
        errors = {record["origin"].rsplit("/", 1)[1]: record["reason"] for record in store.errors(summary.fingerprint).values()}
        assert set(errors) == set(bad)
        assert "empty file" in errors["zero.png"]
        assert "decompression bomb" in errors["bomb.png"]
        assert "no image format in its first bytes b'this is '" in errors["text.jpg"]
        assert all(reason and " object at 0x" not in reason for reason in errors.values())
        vectors = load_dataset_vectors(store, summary.fingerprint, root.name)
        assert vectors.vectors.shape == (6, 96) and vectors.missing == 5
        assert store.verify().ok


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "dataloader-workers"])
def test_text_items_bad_text_and_order(tmp_path: Path, workers: int) -> None:
    table = tmp_path / "texts.jsonl"
    texts = ["a short one", "", "a considerably longer sentence about frozen backbones and caches", "short", "a short one"]
    table.write_text("\n".join(json.dumps({"text": t, "label": str(i % 2)}) for i, t in enumerate(texts)) + "\n")
    model = "hf:sentence-transformers/all-MiniLM-L6-v2"
    opts = options(weights="default")
    with EmbeddingStore(tmp_path / "store") as store:
        summary = extract(model, table, store, options=opts, batch_size=2, workers=workers, progress=False)
        assert (summary.total, summary.computed, summary.failed, summary.cached) == (5, 3, 1, 1)
        data = load_dataset_vectors(store, summary.fingerprint, "texts")
    assert data.origins == [f"{table.resolve()}:{n}" for n in (1, 3, 4, 5)]
    direct = hubtune.load_backbone(model, device="cpu", precision="fp32").embed([texts[i] for i in (0, 2, 3, 4)])
    np.testing.assert_allclose(data.vectors, direct, atol=2e-3)


@pytest.mark.parametrize("streams", [1, 3])
def test_concurrent_streams_keep_each_vector_with_its_item(make_image_folder, tmp_path: Path, streams: int) -> None:
    """``streams`` forwards at once (CPU throughput mode): every vector still lands on its own key."""
    import torch

    from hubtune.extract import cpu_streams

    data = make_image_folder(tmp_path / "images", per_class=9)
    (data / "cat" / "broken.png").write_bytes(b"not a png")
    backbone = hubtune.load_backbone(MODEL, **RANDOM)
    assert cpu_streams(backbone) == (2 if torch.get_num_threads() >= 2 else 1)
    with EmbeddingStore(tmp_path / "store") as store:
        summary = extract(MODEL, data, store, dataset_name="pets", options=options(), batch_size=2, progress=False,
                          backbone=backbone, streams=streams)
        assert (summary.computed, summary.failed) == (18, 1)
        vectors = load_dataset_vectors(store, summary.fingerprint, "pets")
    direct = backbone.embed([Path(origin).read_bytes() for origin in vectors.origins])
    np.testing.assert_allclose(vectors.vectors, direct.astype(np.float16).astype(np.float32), rtol=1e-3, atol=1e-3)


def test_max_failures_raises_after_storing(make_image_folder, tmp_path: Path) -> None:
    from hubtune.extract import TooManyFailures

    root = make_image_folder(tmp_path / "images", per_class=1)
    (root / "cat" / "bad.png").write_bytes(b"")
    with EmbeddingStore(tmp_path / "store") as store:
        with pytest.raises(TooManyFailures, match="over --max-failures"):
            extract(MODEL, root, store, options=options(), max_failures=0.1, progress=False)
        assert store.count(next(iter(store.fingerprints()))) == 2


def test_forward_chunks_keep_padded_tokens_under_the_budget() -> None:
    from hubtune.extract.batches import forward_chunks

    lengths = {i: n for i, n in enumerate([300, 120, 100, 90, 40, 30, 30, 20, 10, 10, 5, 5, 5, 5])}
    order = sorted(lengths, key=lambda i: -lengths[i])
    chunks = list(forward_chunks(order, lengths, batch_size=6, max_tokens=256))
    assert [i for chunk in chunks for i in chunk] == order  # every sample once, in order
    assert chunks[0] == [0]  # longer than the budget alone: a forward of its own
    for chunk in chunks:
        assert len(chunk) <= 6
        assert len(chunk) == 1 or len(chunk) * lengths[chunk[0]] <= 256
    assert [len(c) for c in chunks] == [1, 2, 2, 6, 3]  # short texts fill a forward up to batch_size
    assert list(forward_chunks(order, lengths, 6, None)) == [order[:6], order[6:12], order[12:]]
    assert list(forward_chunks(order, None, 6, 256)) == [order[:6], order[6:12], order[12:]]  # no lengths: rows


def test_a_token_budget_changes_the_forwards_not_the_vectors(tmp_path: Path) -> None:
    from hubtune.embedding import Settings, computed, to_items

    backbone = hubtune.load_backbone("hf:sentence-transformers/all-MiniLM-L6-v2", precision="fp32", device="cpu")
    texts = [" ".join(["word"] * n) for n in (1, 60, 3, 25, 2, 40, 7, 1)]
    items, _ = to_items(texts, "text")
    seen: list[int] = []
    original = backbone.embed_batch

    def counted(batch: dict) -> object:
        seen.append(int(batch["input_ids"].numel()))
        return original(batch)

    backbone.embed_batch = counted  # type: ignore[method-assign]
    rows: dict[int, np.ndarray] = {}
    for positions, vectors, _ in computed(backbone, items, Settings(batch_size=8, streams=1, max_tokens=64)):
        rows.update(zip(positions, vectors))
    assert len(seen) > 1 and max(seen) <= 64  # padded tokens per forward (the 60-word text's 62 alone)
    budgeted = np.stack([rows[i] for i in range(len(texts))])
    np.testing.assert_allclose(budgeted, backbone.embed(texts), atol=1e-5)
