"""Fitting a head on a dataset's cached vectors: splits, normalisation, the fit, the metrics.

Validation is the dataset's ``val`` split when it has one, else a stratified 10 % of ``train``
(seed 0). ``linear`` picks C on it and refits on train + val; ``knn`` and ``mlp`` report it.
Items without a label are not used.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from hubtune.errors import HeadError
from hubtune.heads import knn, linear, mlp
from hubtune.heads.features import Normaliser, class_weights, metrics
from hubtune.heads.trained import HEAD_KINDS, TrainedHead
from hubtune.store.vectors import DatasetVectors


def split_indices(data: DatasetVectors, y: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation rows (of labelled items)."""
    splits = np.array(data.splits)
    if (splits == "val").any():
        return np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")
    train = np.flatnonzero(splits == "train")
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(y[train]):
        members = train[y[train] == label]
        take = int(round(len(members) * 0.1)) if len(members) >= 10 else (1 if len(members) >= 2 else 0)
        val.extend(rng.choice(members, take, replace=False).tolist())
    val_set = set(val)
    return np.array([i for i in train if i not in val_set], dtype=np.int64), np.array(sorted(val), dtype=np.int64)


def train_head(
    data: DatasetVectors, kind: str, model: dict[str, Any], *, normalisation: str | None = None,
    balanced: bool = False, C: float | None = None, k: int = knn.DEFAULT_K, temperature: float = knn.DEFAULT_T,
    mlp_config: mlp.MLPConfig | None = None,
) -> TrainedHead:
    """Fit ``kind`` on ``data``; ``model`` records the reference, options and fingerprint."""
    if kind not in HEAD_KINDS:
        raise HeadError(f"unknown head {kind!r}; expected one of {', '.join(HEAD_KINDS)}")
    labelled = np.array([label is not None for label in data.labels])
    if not labelled.any():
        raise HeadError("the dataset has no labelled items; add a `label` column or class folders")
    # the head's classes are those it is fitted on: a label seen only in `test` would be a class
    # with no training row, which it could never predict
    keep = np.flatnonzero(labelled & np.isin(np.array(data.splits), ["train", "val"]))
    classes = sorted({data.labels[i] for i in keep})
    if len(classes) < 2:
        raise HeadError(f"a classifier needs at least two classes in its train and val splits, the dataset has {classes}")
    subset = DatasetVectors(data.vectors[keep], [data.keys[i] for i in keep], [data.labels[i] for i in keep],
                            [data.splits[i] for i in keep], [data.origins[i] for i in keep], data.missing)
    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[label] for label in subset.labels])
    train, val = split_indices(subset, y)
    if not len(val):
        raise HeadError("no validation items: add a `val` split or more items per class")
    x = subset.vectors  # float32, as stored; heads compute their own statistics in float64
    normalisation = normalisation or {"linear": "standardise", "mlp": "standardise", "knn": "l2"}[kind]
    norm = Normaliser.fit(normalisation, x[train])
    xt, xv = norm(x[train]), norm(x[val])
    weights = class_weights(y[train], len(classes), balanced)
    params: dict[str, Any] = {"balanced": balanced}
    if kind == "linear":
        if C is None:
            C, scores = linear.select_c(xt, y[train], xv, y[val], len(classes), weights)
            params["c_search"] = {f"{c:.3g}": s for c, s in sorted(scores.items())}
        val_probs = linear.fit(xt, y[train], len(classes), C, weights).probabilities(xv)
        both = np.concatenate([train, val])
        norm = Normaliser.fit(normalisation, x[both])
        final = linear.fit(norm(x[both]), y[both], len(classes), C, class_weights(y[both], len(classes), balanced))
        tensors = {"weight": final.weight, "bias": final.bias}
        params["C"] = C
    elif kind == "knn":
        val_probs = knn.fit(xt, y[train], len(classes), k, temperature).probabilities(xv)
        both = np.concatenate([train, val])
        final_knn = knn.fit(norm(x[both]), y[both], len(classes), k, temperature)
        tensors = {"train": final_knn.train, "labels": final_knn.labels}
        params.update(k=k, temperature=temperature)
    else:
        config = mlp_config or mlp.MLPConfig()
        state, _, epoch = mlp.fit(xt, y[train], xv, y[val], len(classes), config, weights)
        val_probs = mlp.probabilities(state, xv, config)
        tensors = {f"mlp.{name}": value for name, value in state.items()}
        params.update(mlp=asdict(config), best_epoch=epoch)
    report = metrics(val_probs, y[val], classes)
    majority = float(np.bincount(y[val], minlength=len(classes)).max() / len(val))
    report["majority_baseline"] = majority
    return TrainedHead(kind, classes, norm, tensors, params, model, {"val": report})
