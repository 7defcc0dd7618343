"""Feature normalisation and the evaluation metrics every head reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubtune.errors import HeadError

if TYPE_CHECKING:
    import numpy as np

NORMALISATIONS = ("none", "l2", "standardise")


@dataclass
class Normaliser:
    """``none``, ``l2`` (unit rows) or ``standardise`` (train mean / std per dimension)."""

    kind: str
    mean: "np.ndarray | None" = None
    std: "np.ndarray | None" = None

    @classmethod
    def fit(cls, kind: str, x: "np.ndarray") -> "Normaliser":
        import numpy as np

        if kind not in NORMALISATIONS:
            raise HeadError(f"unknown normalisation {kind!r}; expected one of {', '.join(NORMALISATIONS)}")
        if kind == "standardise":
            return cls(kind, x.mean(0, dtype=np.float64), x.std(0, dtype=np.float64) + 1e-6)
        return cls(kind)

    def __call__(self, x: "np.ndarray") -> "np.ndarray":
        """Normalised features, in the dtype of ``x``."""
        import numpy as np

        if self.kind == "l2":
            return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12).astype(x.dtype)
        if self.kind == "standardise":
            return ((x - self.mean) / self.std).astype(x.dtype)
        return x

    def tensors(self) -> dict[str, "np.ndarray"]:
        return {} if self.mean is None else {"norm.mean": self.mean, "norm.std": self.std}


def metrics(probabilities: "np.ndarray", y: "np.ndarray", classes: list[str]) -> dict[str, Any]:
    """top-1, top-5 (when more than 5 classes), balanced accuracy, per-class accuracy, confusion."""
    import numpy as np

    predicted = probabilities.argmax(1)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, predicted), 1)
    support = confusion.sum(1)
    per_class = {classes[i]: (float(confusion[i, i] / support[i]) if support[i] else None) for i in range(k)}
    present = [v for v in per_class.values() if v is not None]
    result: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float((predicted == y).mean()) if len(y) else None,
        "balanced_accuracy": float(np.mean(present)) if present else None,
        "per_class_accuracy": per_class,
        "confusion_matrix": confusion.tolist(),
        "top5": None,
    }
    if k > 5 and len(y):
        top5 = np.argsort(-probabilities, axis=1)[:, :5]
        result["top5"] = float((top5 == y[:, None]).any(1).mean())
    return result


def class_weights(y: "np.ndarray", k: int, balanced: bool) -> "np.ndarray":
    """Per-sample weights: 1, or ``n / (k * count(class))`` as scikit-learn's ``balanced``."""
    import numpy as np

    if not balanced:
        return np.ones(len(y))
    counts = np.bincount(y, minlength=k).astype(np.float64)
    return (len(y) / (k * np.maximum(counts, 1)))[y]
