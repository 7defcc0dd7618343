"""Heads: hubtune `knn` vs scikit-learn `KNeighborsClassifier`, `linear` fit vs `LogisticRegression`.

- kNN: 100,000 x 384 training vectors (clustered, 10 classes), 2,000 queries, k = 20: queries per
  second of hubtune's FAISS-backed DINO vote vs KNeighborsClassifier(algorithm="brute",
  metric="cosine", weights=...) with the same k; predictions compared (target >= 5x, same predictions).
  scikit-learn gets DINO's weights through a weights callable, so both compute the same vote.
- linear: one fit at the same C and tolerance on 50,000 x 384 vectors, 10 classes (target: no slower).

Usage: python benchmarks/bench_heads.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fact_row, save, spread, summary_row, timed  # noqa: E402


def clustered(rows: int, dim: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    structure = np.random.default_rng(7)
    centres = structure.standard_normal((classes * 5, 32)) * 2
    projection = structure.standard_normal((32, dim)) / np.sqrt(32)
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, classes * 5, rows)
    x = (centres[cluster] + rng.standard_normal((rows, 32))) @ projection + 0.1 * rng.standard_normal((rows, dim))
    return x.astype(np.float32), cluster % classes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    from hubtune.heads import knn, linear

    x, y = clustered(100_000, 384, 10, seed=0)
    queries, _ = clustered(2_000, 384, 10, seed=1)
    temperature, k = 0.07, 20
    ours = knn.fit(x, y, 10, k=k, temperature=temperature)
    reference = KNeighborsClassifier(n_neighbors=k, algorithm="brute", metric="cosine",
                                     weights=lambda d: np.exp((1 - d) / temperature)).fit(x, y)
    ours_t, ref_t = [], []
    for _ in range(args.repeats):
        ours_t.append(timed(lambda: ours.probabilities(queries)))
        ref_t.append(timed(lambda: reference.predict(queries)))
    agree = float((ours.probabilities(queries).argmax(1) == reference.predict(queries)).mean())
    knn_ratio = statistics.median(ref_t) / statistics.median(ours_t)
    print(f"knn hubtune: {spread(ours_t)}; scikit-learn: {spread(ref_t)}")
    print(f"knn query rate ratio: {knn_ratio:.1f}x (target >= 5), same predictions on {agree:.2%} of queries")

    xl, yl = clustered(50_000, 384, 10, seed=2)
    xl = (xl - xl.mean(0)) / xl.std(0)
    C, tol = 1.0, 1e-4
    ours_l, ref_l = [], []
    for _ in range(args.repeats):
        ours_l.append(timed(lambda: linear.fit(xl, yl, 10, C, tol=tol)))
        ref_l.append(timed(lambda: LogisticRegression(C=C, tol=tol, max_iter=1000).fit(xl, yl)))
    linear_ratio = statistics.median(ref_l) / statistics.median(ours_l)
    print(f"linear hubtune: {spread(ours_l)}; scikit-learn: {spread(ref_l)}")
    print(f"linear fit speed ratio (scikit-learn time / hubtune time): {linear_ratio:.2f}x (target >= 1.0)")
    summary = [
        summary_row("knn query rate vs scikit-learn KNeighborsClassifier, 100,000 x 384, k=20", ref_t, ours_t, ">= 5"),
        fact_row("knn predictions equal to scikit-learn's", f"{agree:.2%} of 2,000 queries", ""),
        summary_row("linear fit vs scikit-learn LogisticRegression, 50,000 x 384", ref_l, ours_l, ">= 1.0"),
    ]
    print(f"saved {save('heads', {'knn_seconds': {'hubtune': ours_t, 'sklearn': ref_t}, 'knn_ratio': knn_ratio, 'knn_agreement': agree, 'linear_seconds': {'hubtune': ours_l, 'sklearn': ref_l}, 'linear_ratio': linear_ratio, 'summary': summary})}")


if __name__ == "__main__":
    main()
