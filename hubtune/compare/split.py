"""Which items ``compare`` fits its heads on and which it scores them on, the same for every model.

A dataset with labelled ``test`` items is scored on them, and trained exactly as ``hubtune train``
trains (its ``train`` and ``val`` items; ``val``, or a stratified 10 % of ``train``, picks C and is
folded back in). A dataset without one is split here: a seeded, stratified hold-out of its labelled
``train``/``val`` items (20 % of each class by default, at least one item of a class with two or
more), drawn by content key, so that copies of one file never land on both sides; the rest is the
training data, with the same ``val`` handling inside it.

The split is decided on the dataset's items, before any model runs, so every model is scored on
the same items (an item a model failed to embed is simply missing from both of that model's sides).
What the heads need is checked then too, once: two classes to train on, a validation item, a scored
item of a trained class; a dataset without them is refused before a model loads.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from hubtune.data import Item
from hubtune.errors import HeadError

if TYPE_CHECKING:
    from hubtune.heads.trained import TrainedHead
    from hubtune.store.vectors import DatasetVectors

HOLDOUT = 0.2
TRAIN_SPLITS = ("train", "val")


@dataclass(frozen=True)
class EvaluationSplit:
    """``kind`` is ``test`` (the dataset's own) or ``holdout``; ``scored`` are the dataset positions
    the heads are scored on; in a hold-out they are also kept out of the training data."""

    kind: str
    scored: frozenset[int]
    seed: int | None = None
    fraction: float | None = None

    def describe(self) -> str:
        if self.kind == "test":
            return "the dataset's test split"
        return f"a stratified {self.fraction:.0%} hold-out (seed {self.seed})"


def evaluation_split(items: Sequence[Item], seed: int = 0, fraction: float = HOLDOUT) -> EvaluationSplit:
    """The dataset's labelled ``test`` items, or a seeded stratified hold-out of its labelled train/val items."""
    import numpy as np

    if not 0 < fraction < 1:
        raise HeadError(f"a hold-out fraction of {fraction} leaves nothing to train or to score; expected 0 < f < 1")
    labelled = [i for i, item in enumerate(items) if item.label is not None]
    if not labelled:
        raise HeadError("the dataset has no labelled items; add a `label` column or class folders")
    trained_on = [items[i].label for i in labelled if items[i].split in TRAIN_SPLITS]
    if len(set(trained_on)) < 2:
        raise HeadError(f"the heads need at least two classes to train on; the dataset's labelled train/val items "
                        f"have {_classes(trained_on)}: add items of another class")
    test = [i for i in labelled if items[i].split == "test"]
    if test:
        return _checked(items, EvaluationSplit("test", frozenset(test)))
    by_key: dict[bytes, list[int]] = {}
    for i in labelled:
        if items[i].split in TRAIN_SPLITS:
            by_key.setdefault(items[i].key, []).append(i)
    keys = list(by_key)  # dataset order (a copy of a file goes with its first occurrence's label)
    labels = np.array([items[by_key[key][0]].label for key in keys], dtype=object)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == label)
        take = int(round(len(members) * fraction)) if len(members) >= 5 else (1 if len(members) >= 2 else 0)
        for k in sorted(rng.choice(members, take, replace=False).tolist()):
            held.extend(by_key[keys[k]])
    if not held:
        raise HeadError(f"no class has 2 or more labelled train/val items ({_classes(labels.tolist())}), so none "
                        "can be held out to score on: give the dataset a `test` split or more items per class")
    return _checked(items, EvaluationSplit("holdout", frozenset(held), seed, fraction))


def _classes(labels: Sequence[str | None]) -> str:
    """``2 classes: 'a' (3 items), 'b' (1 item)``, the first few by name."""
    counts = Counter(labels)
    shown = [f"{label!r} ({n} item{'s' * (n != 1)})" for label, n in sorted(counts.items(), key=str)[:5]]
    more = f", ... ({len(counts) - 5} more)" if len(counts) > 5 else ""
    return f"{len(counts)} class{'es' * (len(counts) != 1)}: {', '.join(shown)}{more}" if counts else "no labelled item"


def _checked(items: Sequence[Item], split: EvaluationSplit) -> EvaluationSplit:
    """``split``, once the heads can be fitted and scored on it, checked before any model runs as
    ``train_head`` checks for each: at least two classes in the training items (labelled train/val
    items, less a hold-out), a validation item (a ``val`` split, or a class with two or more training
    items to set one aside from), and a scored item whose label is one of those classes."""
    training = [i for i, item in enumerate(items)
                if item.label is not None and item.split in TRAIN_SPLITS and i not in split.scored]
    labels = [items[i].label for i in training]
    counts = Counter(labels)
    where = "train/val items" + (" outside the hold-out" if split.kind == "holdout" else "")
    if len(counts) < 2:
        raise HeadError(f"the heads need at least two classes to train on; the dataset's labelled {where} have "
                        f"{_classes(labels)}: add items of another class")
    if not any(items[i].split == "val" for i in training) and max(counts.values()) < 2:
        raise HeadError(f"the heads need a validation item: a `val` split, or a class with 2 or more training items "
                        f"to set one aside from; the dataset's labelled {where} have {_classes(labels)}")
    if not any(items[i].label in counts for i in split.scored):
        raise HeadError(f"no scored item ({split.describe()}) has a label of the training items "
                        f"({_classes(labels)}): the heads could not score any")
    return split


def positions(vectors: "DatasetVectors", items: Sequence[Item]) -> list[int]:
    """The dataset position of each row of ``vectors`` (a model's vectors skip the items it failed on;
    whether an item has a vector depends on its content key only, so the rows are the items whose
    key has one, in dataset order)."""
    present = set(vectors.keys)
    found = [i for i, item in enumerate(items) if item.key.hex() in present]
    if len(found) != len(vectors.keys):
        raise HeadError(f"the dataset's items changed while compare ran ({len(found)} items, "
                        f"{len(vectors.keys)} vectors); run compare again")
    return found


def training_data(vectors: "DatasetVectors", rows: list[int], split: EvaluationSplit) -> "DatasetVectors":
    """What the heads are fitted on: everything (``train_head`` keeps train/val) when scored on the
    test split, else everything but the held-out rows."""
    from hubtune.store.vectors import DatasetVectors

    if split.kind == "test":
        return vectors
    keep = [r for r, position in enumerate(rows) if position not in split.scored]
    return DatasetVectors(vectors.vectors[keep], [vectors.keys[r] for r in keep], [vectors.labels[r] for r in keep],
                          [vectors.splits[r] for r in keep], [vectors.origins[r] for r in keep], vectors.missing)


def scored_rows(vectors: "DatasetVectors", rows: list[int], split: EvaluationSplit) -> list[int]:
    return [r for r, position in enumerate(rows) if position in split.scored]


def accuracy(head: "TrainedHead", vectors: "DatasetVectors", rows: list[int], fingerprint: str) -> tuple[float, int]:
    """``(accuracy, items scored)`` of ``head`` on ``rows``, scored as ``hubtune eval`` scores: the rows whose
    label is one of the head's classes, through ``head.probabilities`` and the heads' ``metrics``."""
    import numpy as np

    from hubtune.heads.features import metrics

    known: dict[str | None, int] = {label: i for i, label in enumerate(head.classes)}
    rows = [r for r in rows if vectors.labels[r] in known]
    if not rows:
        raise HeadError(f"no scored item has a label the heads know ({', '.join(head.classes)})")
    y = np.array([known[vectors.labels[r]] for r in rows])
    report = metrics(head.probabilities(vectors.vectors[rows], fingerprint), y, head.classes)
    return report["accuracy"], len(rows)

