"""What every head is, whichever way it was trained: the interface ``eval``, ``predict`` and
``export-model`` rely on.

Two kinds implement it: :class:`hubtune.heads.trained.TrainedHead` (linear, mlp, knn on frozen
vectors) and :class:`hubtune.finetune.saved.FinetunedHead` (a trained top of the backbone plus a
head). Both are a folder with ``head.safetensors`` + ``head.json``; ``model`` in ``head.json`` names
the backbone (reference, canonical options) and the fingerprint of the vectors the head reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class Head(Protocol):
    kind: str  # linear, mlp, knn or finetune
    classes: list[str]
    model: dict[str, Any]  # ref, options (canonical: they rebuild the backbone), fingerprint
    metrics: dict[str, Any]

    def probabilities(self, vectors: "np.ndarray", fingerprint: str | None = None) -> "np.ndarray":
        """``(N, classes)`` class probabilities for rows of ``fingerprint`` (refused when it is another)."""
        ...

    def save(self, folder: str | Path) -> Path:
        """Write the head folder (staged: never half-written)."""
        ...
