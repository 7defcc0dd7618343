"""What every head is, whichever way it was trained: the interface ``eval``, ``predict`` and
``export-model`` rely on (:class:`Head`), and what a user does with one (:class:`HeadMethods`).

Three kinds implement it: :class:`hubtune.heads.trained.TrainedHead` (linear, mlp, knn on frozen
vectors), :class:`hubtune.heads.zeroshot.ZeroShotHead` (class vectors from a text tower) and
:class:`hubtune.finetune.saved.FinetunedHead` (a trained top of the backbone plus a head). Each is a
folder with ``head.safetensors`` + ``head.json``; ``model`` in ``head.json`` names the backbone
(reference, canonical options) and the fingerprint of the vectors the head reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from hubtune.backbone import Backbone


@runtime_checkable
class Head(Protocol):
    """What a head kind is: its files and :meth:`probabilities` (what the CLI's ``eval``, ``predict`` and
    ``export-model`` use), and the Python API on top of them, which every kind gets from :class:`HeadMethods`."""

    kind: str  # linear, mlp, knn, zeroshot or finetune
    classes: list[str]
    model: dict[str, Any]  # ref, options (canonical: they rebuild the backbone), fingerprint
    metrics: dict[str, Any]

    def probabilities(self, vectors: "np.ndarray", fingerprint: str | None = None) -> "np.ndarray":
        """``(N, classes)`` class probabilities for rows of ``fingerprint`` (refused when it is another)."""
        ...

    def save(self, folder: str | Path) -> Path:
        """Write the head folder (staged: never half-written)."""
        ...

    def predict_proba(self, inputs: Any, *, cache: "str | os.PathLike[str] | None" = None) -> "np.ndarray":
        """``(N, classes)`` probabilities for raw inputs or a 2-D array of vectors (:class:`HeadMethods`)."""
        ...

    def predict(self, inputs: Any, *, cache: "str | os.PathLike[str] | None" = None) -> list[str]:
        """The most probable class of each input."""
        ...

    def evaluate(self, data: str | os.PathLike[str], *, cache: "str | os.PathLike[str] | None" = None,
                 batch_size: int = 64) -> dict[str, Any]:
        """Scores on a labelled dataset: the dict ``hubtune eval --json`` prints."""
        ...


class HeadMethods:
    """The Python API of a head (``hubtune.train_head`` and ``hubtune.load_head`` return one), on top of
    :meth:`probabilities`: the head embeds raw inputs with the backbone it records (loaded once, on
    first use, and checked by fingerprint) through its ``cache``, as ``hubtune predict`` and ``eval`` do.

    ``cache`` is the store the head embeds through (a folder or a :class:`hubtune.Cache`; None: no store,
    the model just embeds, and the vectors are rounded to the stored dtype the head was trained on, so
    the results are the same). ``train_head`` sets it to the cache the head was trained from;
    ``load_head(path, cache=...)`` sets it; each method also takes ``cache=`` for one call.

    Every method takes raw inputs (texts, or image paths, bytes or PIL images for an image head) or a
    2-D numpy array of vectors already embedded (rows of the head's fingerprint: what
    :meth:`hubtune.Cache.vectors` and ``hubtune export`` give), which the head scores as they are.
    """

    kind: str
    classes: list[str]
    model: dict[str, Any]
    metrics: dict[str, Any]
    cache: "str | os.PathLike[str] | None" = None
    loaded_backbone: "Backbone | None" = None

    def probabilities(self, vectors: "np.ndarray", fingerprint: str | None = None) -> "np.ndarray":
        raise NotImplementedError

    def save(self, folder: str | Path) -> Path:
        raise NotImplementedError

    def backbone(self) -> "Backbone":
        """The backbone the head reads vectors of, with the options it records (loaded once)."""
        if self.loaded_backbone is None:
            from hubtune.heads.use import head_backbone

            self.loaded_backbone = head_backbone(self)  # type: ignore[arg-type]
        return self.loaded_backbone

    def predict_proba(self, inputs: Any, *, cache: "str | os.PathLike[str] | None" = None) -> "np.ndarray":
        """``(N, len(classes))`` probabilities, columns in :attr:`classes` order."""
        from hubtune.heads.use import head_probabilities

        return head_probabilities(self, inputs, cache if cache is not None else self.cache)  # type: ignore[arg-type]

    def predict(self, inputs: Any, *, cache: "str | os.PathLike[str] | None" = None) -> list[str]:
        """The most probable class of each input (``hubtune predict``'s ``label``)."""
        probabilities = self.predict_proba(inputs, cache=cache)
        return [self.classes[int(row.argmax())] for row in probabilities]

    def evaluate(self, data: str | os.PathLike[str], *, cache: "str | os.PathLike[str] | None" = None,
                 batch_size: int = 64) -> dict[str, Any]:
        """Score the head on the labelled dataset at ``data``: the dict ``hubtune eval --json`` prints
        (``n``, ``accuracy``, ``balanced_accuracy``, ``top5``, ``per_class_accuracy``, ``confusion_matrix``,
        ``skipped``). Through a cache, ``data`` is recorded there as ``eval-NAME``, as ``eval`` does."""
        from hubtune.heads.use import evaluate

        return evaluate(self, data, cache if cache is not None else self.cache, batch_size)  # type: ignore[arg-type]

    def __repr__(self) -> str:  # short: a head's tensors are not worth printing
        more = len(self.classes) > 5
        shown = ", ".join(map(repr, self.classes[:5])) + (f", ... ({len(self.classes)} classes)" if more else "")
        accuracy = (self.metrics.get("val") or {}).get("accuracy")
        return (f"{type(self).__name__}(kind={self.kind!r}, classes=[{shown}], model={self.model.get('ref')!r}, "
                f"fingerprint={self.model.get('fingerprint')!r}"
                + ("" if accuracy is None else f", val_accuracy={round(accuracy, 4)}") + ")")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("loaded_backbone", None)  # a loaded network is not part of the head
        return state
