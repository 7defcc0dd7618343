"""FAISS indexes: exact round trip, ANN recall on clustered data, atomic files, stale detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hubtune import index as ix


def gaussian_mixture(rows: int, dim: int = 64, clusters: int = 100, seed: int = 0, latent: int = 16) -> np.ndarray:
    """Clustered vectors like real embeddings: a Gaussian mixture in a low-dimensional latent space,
    mapped linearly into ``dim`` dimensions with a little isotropic noise. (Isotropic noise in all
    ``dim`` dimensions would make within-cluster neighbours arbitrary, which no ANN index serves.)"""
    structure = np.random.default_rng(12345)  # the same mixture for data and queries
    centres = structure.standard_normal((clusters, latent)) * 3
    projection = structure.standard_normal((latent, dim)) / np.sqrt(latent)
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, clusters, rows)] + rng.standard_normal((rows, latent))
    return (points @ projection + 0.05 * rng.standard_normal((rows, dim))).astype(np.float32)


def exact(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    data = data / np.linalg.norm(data, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    return np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :k]


IDENTITY = {"fingerprint": "ab" * 16, "dataset": "d", "rows": 2000}


def test_auto_picks_by_rows_and_memory() -> None:
    assert ix.choose_spec(1000, 384).kind == "flat"
    assert ix.choose_spec(200_000, 384).kind == "hnsw"
    assert ix.choose_spec(200_000, 384, max_memory=200_000 * 1600).kind == "ivf"
    spec = ix.choose_spec(10_000_000, 384, max_memory=1 << 30)
    assert spec.kind == "ivfpq" and 384 % spec.pq_m == 0
    with pytest.raises(ix.IndexOptionError, match="unknown index kind"):
        ix.choose_spec(10, 4, kind="annoy")
    with pytest.raises(ix.IndexOptionError, match="needs at least 256 vectors; this dataset has 22"):
        ix.choose_spec(22, 8, kind="ivfpq")  # faiss would fail deep in PQ training


def test_flat_round_trip_equals_exact_search(tmp_path: Path) -> None:
    data = gaussian_mixture(2000, dim=32)
    queries = gaussian_mixture(50, dim=32, seed=1)
    spec = ix.choose_spec(len(data), 32, kind="flat")
    path = tmp_path / "flat.faiss"
    ix.save(ix.build(data, spec), path, spec, IDENTITY)
    loaded, loaded_spec = ix.load(path, IDENTITY)
    assert loaded_spec == spec
    scores, ids = ix.search(loaded, queries, 10, "cosine")
    np.testing.assert_array_equal(ids, exact(data, queries, 10))
    assert scores.shape == (50, 10) and (scores <= 1.0001).all()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_ann_recall_at_10_on_clustered_vectors(tmp_path: Path, kind: str) -> None:
    data = gaussian_mixture(50_000)
    queries = gaussian_mixture(500, seed=1)
    spec = ix.choose_spec(len(data), data.shape[1], kind=kind)
    path = tmp_path / f"{kind}.faiss"
    identity = {**IDENTITY, "rows": len(data)}
    ix.save(ix.build(data, spec), path, spec, identity)
    loaded, loaded_spec = ix.load(path, identity)  # default search settings come back from the sidecar
    assert (loaded_spec.nprobe if kind == "ivf" else loaded_spec.ef_search) > 0
    _, ids = ix.search(loaded, queries, 10, "cosine")
    truth = exact(data, queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, truth)])
    print(f"{kind}: recall@10 = {recall:.3f} at {loaded_spec}")
    assert recall >= 0.95


def test_k_larger_than_rows_is_clipped(tmp_path: Path) -> None:
    data = gaussian_mixture(5, dim=8)
    spec = ix.choose_spec(5, 8)
    _, ids = ix.search(ix.build(data, spec), data, 20, "cosine")
    assert ids.shape == (5, 5) and (ids >= 0).all()


def test_truncated_stale_or_foreign_index_is_not_trusted(tmp_path: Path) -> None:
    data = gaussian_mixture(2000, dim=16)
    spec = ix.choose_spec(len(data), 16, kind="flat")
    path = tmp_path / "i.faiss"
    ix.save(ix.build(data, spec), path, spec, IDENTITY)
    assert ix.load(path, IDENTITY) is not None
    assert ix.load(path, {**IDENTITY, "fingerprint": "cd" * 16}) is None  # another model's vectors
    assert ix.load(path, {**IDENTITY, "rows": 2001}) is None  # the dataset grew
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])  # truncated
    assert ix.load(path, IDENTITY) is None
    ix.sidecar_path(path).unlink()
    assert ix.load(path, IDENTITY) is None


def test_save_leaves_no_temporary_files(tmp_path: Path) -> None:
    data = gaussian_mixture(100, dim=8)
    spec = ix.choose_spec(100, 8)
    ix.save(ix.build(data, spec), tmp_path / "i.faiss", spec, IDENTITY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.faiss", "i.faiss.json"]


def test_remove_indexes_matches_sidecars_not_file_names(tmp_path: Path) -> None:
    data = gaussian_mixture(20, dim=8)
    spec = ix.choose_spec(20, 8)
    folder = tmp_path / "indexes"
    for name, dataset in (("d1-aa.faiss", "d1"), ("d10-aa.faiss", "d10"), ("a/b-aa.faiss", "a/b")):
        ix.save(ix.build(data, spec), folder / name, spec, {**IDENTITY, "dataset": dataset})
    (folder / "stray.faiss.json").write_text("not json")
    assert ix.remove_indexes(folder, dataset="d1") == [folder / "d1-aa.faiss"]
    assert ix.remove_indexes(folder, dataset="a/b") == [folder / "a" / "b-aa.faiss"]
    assert sorted(p.name for p in folder.iterdir()) == ["d10-aa.faiss", "d10-aa.faiss.json", "stray.faiss.json"]
    assert ix.remove_indexes(folder, fingerprint=IDENTITY["fingerprint"]) == [folder / "d10-aa.faiss"]
    assert ix.remove_indexes(tmp_path / "none", dataset="d1") == []
