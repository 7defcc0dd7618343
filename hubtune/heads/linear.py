"""The linear probe: multinomial logistic regression fitted with L-BFGS in float64.

The protocol of Kornblith et al. (2019) and DINOv2's linear eval: L2-regularised softmax
regression, bias unpenalised, the regularisation C chosen on a validation split over
``10**linspace(-6, 5, 45)`` (searched coarse-to-fine with warm starts), then refitted on train + val.
The objective is scikit-learn's (``mean(loss) + ||W||^2 / (2 C n)``), so at the same C the two agree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np  # heads are imported only when a head is trained or used

C_GRID_SIZE = 45
#: below this many multiply-adds per product (n * d * classes) the fit runs BLAS on one thread: its
#: (n, d) @ (d, k) products are too thin to share, and OpenBLAS's threads spinning against each other made
#: a 384 x 1280 C search 15x slower (8.6 s vs 0.56 s) and a 20,000 x 1024 x 10 fit 2.7-4x slower on a
#: busy 2-core machine (this project's VM, 2026-12-01; measured ad hoc with select_c / fit on random data,
#: not a benchmarks/ script: bench_compare.py shows the effect on a cached compare)
ONE_THREAD_BELOW = 5e8


def c_grid() -> np.ndarray:
    return 10.0 ** np.linspace(-6, 5, C_GRID_SIZE)


@dataclass
class LinearModel:
    weight: np.ndarray  # (d, k) float64
    bias: np.ndarray  # (k,)
    C: float

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        logits = x.astype(np.float64) @ self.weight + self.bias  # (n, k)
        return _softmax(logits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(1, keepdims=True)


def fit(x: np.ndarray, y: np.ndarray, k: int, C: float, sample_weight: "np.ndarray | None" = None,
        tol: float = 1e-4, max_iter: int = 1000, start: LinearModel | None = None) -> LinearModel:
    """One fit at regularisation ``C`` (scikit-learn's L-BFGS settings and objective).

    L-BFGS, the parameters, the loss and the softmax are float64. The two products with the data
    run in the data's own precision, as in scikit-learn: float32 features (cached vectors) halve
    the memory traffic that bounds this fit; float64 features give a fully float64 fit.
    """
    x = np.ascontiguousarray(x if x.dtype == np.float32 else x.astype(np.float64))
    n, d = x.shape
    with blas_threads(n * d * k):
        return _fit(x, y, k, C, sample_weight, tol, max_iter, start)


@functools.cache
def blas_controller() -> Any:
    """The process's thread pools, found once (a scan of the loaded libraries costs tens of ms), after
    scipy.optimize has loaded its own BLAS (L-BFGS-B's), so both numpy's and scipy's are limited."""
    import scipy.optimize  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def blas_threads(work: float) -> Any:
    """One BLAS thread for a fit of ``work`` multiply-adds per product under :data:`ONE_THREAD_BELOW`,
    else BLAS's own count."""
    return blas_controller().limit(limits=1 if work < ONE_THREAD_BELOW else None, user_api="blas")


def _fit(x: np.ndarray, y: np.ndarray, k: int, C: float, sample_weight: "np.ndarray | None", tol: float,
         max_iter: int, start: "LinearModel | None") -> LinearModel:
    from scipy.optimize import minimize

    n, d = x.shape
    weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = weights.sum()
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1.0
    l2 = 1.0 / (C * total)

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = flat[: d * k].reshape(d, k), flat[d * k:]
        logits = (x @ w.astype(x.dtype)).astype(np.float64) + b  # (n, k)
        top = logits.max(1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(1))  # stable log-sum-exp
        loss = (weights * (log_norm - (logits * onehot).sum(1))).sum() / total + 0.5 * l2 * (w * w).sum()
        residual = (np.exp(logits - log_norm[:, None]) - onehot) * (weights / total)[:, None]  # (n, k)
        grad_w = (x.T @ residual.astype(x.dtype)).astype(np.float64) + l2 * w
        return loss, np.concatenate([grad_w.ravel(), residual.sum(0)])

    initial = np.zeros(d * k + k) if start is None else np.concatenate([start.weight.ravel(), start.bias])
    result = minimize(objective, initial, method="L-BFGS-B", jac=True,
                      options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps})
    return LinearModel(result.x[: d * k].reshape(d, k), result.x[d * k:], C)


def select_c(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, k: int,
             sample_weight: "np.ndarray | None" = None, tol: float = 1e-4,
             score: Callable[[np.ndarray, np.ndarray], float] | None = None) -> tuple[float, dict[float, float]]:
    """Best C on the validation split: every 4th grid value first, then the neighbours of the best.

    Ties in ``score`` (accuracy) go to the lower validation log-loss: on small or easy data every C
    is 100 % accurate, and picking the strongest regularisation then gave near-uniform probabilities.
    """
    grid = c_grid()
    score = score or (lambda p, y: float((p.argmax(1) == y).mean()))
    tried: dict[float, float] = {}
    losses: dict[float, float] = {}

    def rank(c: float) -> tuple[float, float]:
        return tried.get(c, -1.0), -losses.get(c, np.inf)

    def evaluate(indices: list[int]) -> None:
        model = None
        for index in sorted(indices):  # increasing C: each fit warm-starts the next
            C = float(grid[index])
            if C in tried:
                continue
            model = fit(x_train, y_train, k, C, sample_weight, tol, start=model)
            probabilities = model.probabilities(x_val)
            tried[C] = score(probabilities, y_val)
            losses[C] = float(-np.log(np.clip(probabilities[np.arange(len(y_val)), y_val], 1e-12, None)).mean())

    evaluate(list(range(0, C_GRID_SIZE, 4)))
    best = max(range(C_GRID_SIZE), key=lambda i: rank(float(grid[i])))
    evaluate([i for i in range(best - 3, best + 4) if 0 <= i < C_GRID_SIZE])
    return max(tried, key=rank), tried
