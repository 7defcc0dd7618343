"""Heads on cached vectors: linear vs scikit-learn, knn vs DINO's vote in NumPy, saved heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hubtune.heads import knn, linear
from hubtune.heads.features import HeadError, metrics
from hubtune.heads.trained import TrainedHead
from hubtune.heads.training import train_head
from hubtune.store.vectors import DatasetVectors


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    return (xtr - mean) / std, (xte - mean) / std, ytr, yte


@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_linear_matches_scikit_learn(digits, C: float) -> None:
    from sklearn.linear_model import LogisticRegression

    xtr, xte, ytr, yte = digits
    reference = LogisticRegression(C=C, tol=1e-8, max_iter=10_000).fit(xtr, ytr)
    ours = linear.fit(xtr, ytr, 10, C, tol=1e-8, max_iter=10_000)
    ref_p, our_p = reference.predict_proba(xte), ours.probabilities(xte)
    accuracy_gap = abs((ref_p.argmax(1) == yte).mean() - (our_p.argmax(1) == yte).mean())
    print(f"C={C}: accuracy gap {accuracy_gap:.4f}, max probability difference {np.abs(ref_p - our_p).max():.2e}")
    assert accuracy_gap <= 0.005
    assert np.abs(ref_p - our_p).max() <= 1e-4


def test_c_search_prefers_a_sensible_c(digits) -> None:
    xtr, xte, ytr, yte = digits
    best, tried = linear.select_c(xtr, ytr, xte, yte, 10)
    assert 1e-4 <= best <= 1e5 and len(tried) >= 12 and tried[best] >= 0.95


def dino_reference(train: np.ndarray, labels: np.ndarray, queries: np.ndarray, k: int, T: float, classes: int) -> np.ndarray:
    """DINO's eval_knn vote, written directly in float64 NumPy."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    sims = queries @ train.T
    k = min(k, len(train))
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    weights = np.exp(np.take_along_axis(sims, top, 1) / T)
    votes = np.zeros((len(queries), classes))
    for row in range(len(queries)):
        np.add.at(votes[row], labels[top[row]], weights[row])
    return votes.argmax(1)


@pytest.mark.parametrize("k,T,rows,queries", [(20, 0.07, 500, 60), (1000, 0.07, 50, 10), (20, 0.005, 500, 60), (1, 0.07, 30, 5)])
def test_knn_matches_dino_vote(k: int, T: float, rows: int, queries: int) -> None:
    rng = np.random.default_rng(k + rows)
    train = rng.standard_normal((rows, 24))
    labels = rng.integers(0, 5, rows)
    query = rng.standard_normal((queries, 24))
    probabilities = knn.fit(train, labels, 5, k=k, temperature=T).probabilities(query)
    assert np.isfinite(probabilities).all() and np.allclose(probabilities.sum(1), 1)
    np.testing.assert_array_equal(probabilities.argmax(1), dino_reference(train, labels, query, k, T, 5))


def test_knn_padded_neighbours_are_ignored() -> None:
    sims = np.array([[0.9, 0.5, 0.0]])
    ids = np.array([[1, 0, -1]])
    votes = knn.vote(sims, ids, np.array([0, 1]), 2, 0.07)
    assert votes.shape == (1, 2) and votes[0, 1] > votes[0, 0] and np.isclose(votes.sum(), 1)


def test_knn_leave_one_out_excludes_the_item_itself() -> None:
    rng = np.random.default_rng(3)
    train = rng.standard_normal((40, 8))
    labels = rng.integers(0, 2, 40)
    model = knn.fit(train, labels, 2, k=1)
    loo = model.probabilities(train, leave_one_out=True).argmax(1)
    sims = (train / np.linalg.norm(train, axis=1, keepdims=True)) @ (train / np.linalg.norm(train, axis=1, keepdims=True)).T
    np.fill_diagonal(sims, -np.inf)
    np.testing.assert_array_equal(loo, labels[sims.argmax(1)])


def test_metrics_report() -> None:
    probabilities = np.eye(7)[[0, 1, 2, 3, 4, 5, 6, 0]]
    report = metrics(probabilities, np.array([0, 1, 2, 3, 4, 5, 6, 1]), list("abcdefg"))
    assert report["accuracy"] == 7 / 8 and report["top5"] is not None
    assert report["per_class_accuracy"]["b"] == 0.5 and report["confusion_matrix"][1][0] == 1


def _dataset(x: np.ndarray, y: np.ndarray, splits: list[str] | None = None) -> DatasetVectors:
    n = len(y)
    return DatasetVectors(x.astype(np.float32), [f"{i:032x}" for i in range(n)], [str(v) for v in y],
                          splits or ["train"] * n, [f"/data/{i}" for i in range(n)], 0)


@pytest.mark.parametrize("kind", ["linear", "knn", "mlp"])
def test_saved_head_gives_identical_probabilities(digits, kind: str, tmp_path: Path) -> None:
    xtr, xte, ytr, _ = digits
    model = {"ref": "timm:x", "fingerprint": "ab" * 16, "options": {}}
    head = train_head(_dataset(xtr, ytr), kind, model, C=0.1 if kind == "linear" else None)
    assert head.metrics["val"]["accuracy"] > head.metrics["val"]["majority_baseline"] + 0.5
    head.save(tmp_path / "head")
    manifest = json.loads((tmp_path / "head" / "head.json").read_text())
    assert manifest["model"]["fingerprint"] == "ab" * 16 and manifest["classes"] == [str(i) for i in range(10)]
    loaded = TrainedHead.load(tmp_path / "head")
    np.testing.assert_array_equal(loaded.probabilities(xte, "ab" * 16), head.probabilities(xte))
    with pytest.raises(HeadError, match="trained on vectors " + "ab" * 16):
        loaded.probabilities(xte, "cd" * 16)


@pytest.mark.parametrize("kind", ["linear", "knn"])
def test_head_classes_are_those_it_is_fitted_on(kind: str) -> None:
    """A label that only appears in the test split is no class of the head (it could never predict it)."""
    rng = np.random.default_rng(0)
    y = np.array([0] * 20 + [1] * 20 + [2] * 5)
    x = rng.normal(size=(len(y), 8)) + y[:, None]
    splits = ["train"] * 40 + ["test"] * 5
    head = train_head(_dataset(x, y, splits), kind, {"ref": "timm:x", "fingerprint": "ab" * 16, "options": {}})
    assert head.classes == ["0", "1"]
    with pytest.raises(HeadError, match="at least two classes in its train and val splits"):
        train_head(_dataset(x[30:], y[30:], ["train"] * 10 + ["test"] * 5), kind, {"ref": "timm:x"})


def test_c_search_ties_go_to_the_lower_validation_loss() -> None:
    """Separable data: every C is 100 % accurate; the chosen one must not be the near-uniform strongest one."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (40, 8)), rng.normal(3, 1, (40, 8))])
    y = np.repeat([0, 1], 40)
    order = rng.permutation(80)
    x, y = x[order], y[order]
    best, tried = linear.select_c(x[:60], y[:60], x[60:], y[60:], 2)
    assert tried[best] == 1.0 and sum(accuracy == 1.0 for accuracy in tried.values()) > 1  # a tie to break
    confidence = linear.fit(x[:60], y[:60], 2, best).probabilities(x[60:]).max(1).mean()
    assert best > min(c for c, accuracy in tried.items() if accuracy == 1.0) and confidence > 0.9


def test_mlp_keeps_training_past_a_perfect_first_epoch_on_small_data() -> None:
    """On a tiny validation split accuracy is 1.0 after one step; ties go to the lower validation loss,
    so the kept epoch is a trained one (it was epoch 0: probabilities near uniform)."""
    from hubtune.heads import mlp

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (3, 64))
    def sample(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(3), per_class)
        return (centres[y] + rng.normal(0, 0.5, (len(y), 64))).astype(np.float32), y
    (x, y), (xv, yv) = sample(16), sample(2)
    state, accuracy, epoch = mlp.fit(x, y, xv, yv, 3, mlp.MLPConfig())
    assert accuracy == 1.0 and epoch > 0
    assert mlp.probabilities(state, xv, mlp.MLPConfig()).max(1).mean() > 0.9
