"""``hubtune.train_head``: a head fitted on a dataset's cached vectors, as ``hubtune train`` fits it.

The vectors are found as ``export`` finds them (the model and the options ``extract`` was given;
unset ones match any value); the head records the options those vectors were made with, so that
``predict`` and ``eval`` rebuild exactly that backbone. ``linear``, ``mlp`` and ``knn`` are fitted
by :func:`hubtune.heads.training.train_head`; ``zeroshot`` is built from the dataset's class names
by the model's text tower.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hubtune.backbone import LoadOptions
from hubtune.embedding import load_options
from hubtune.errors import HeadError
from hubtune.heads.knn import DEFAULT_K, DEFAULT_T

if TYPE_CHECKING:
    from hubtune.heads.protocol import HeadMethods

#: what ``head=`` may be
KINDS = ("linear", "mlp", "knn", "zeroshot")


def check_hyperparameters(head: str, C: float | None, k: int, temperature: float, hidden: int, epochs: int,
           templates: Sequence[str]) -> None:
    """The hyperparameters ``hubtune train``'s options accept, refused before any work."""
    if head not in KINDS:
        raise HeadError(f"unknown head {head!r}; expected one of {', '.join(KINDS)}")
    for name, value in (("C", C), ("temperature", temperature)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise HeadError(f"{name}={value!r}; expected a finite number above 0")
    for name, count in (("k", k), ("hidden", hidden), ("epochs", epochs)):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise HeadError(f"{name}={count!r}; expected a whole number of at least 1")
    if templates and head != "zeroshot":
        raise HeadError("templates apply to head='zeroshot' only")
    if head == "zeroshot":
        from hubtune.heads.zeroshot import check_templates

        check_templates(templates)


def train_head(cache: "str | os.PathLike[str] | None", model: str, dataset: str, head: str = "linear", *,
               out: str | os.PathLike[str] | None = None, normalise: str | None = None, balanced: bool = False,
               C: float | None = None, k: int = DEFAULT_K, temperature: float = DEFAULT_T, hidden: int = 512,
               epochs: int = 100, templates: Sequence[str] = (), options: LoadOptions | None = None,
               **model_options: Any) -> "HeadMethods":
    """Fit a ``head`` (``linear``, ``mlp``, ``knn`` or ``zeroshot``) on the cached vectors of ``dataset``.

    ``cache`` is the store (a folder or a :class:`hubtune.Cache`; None: the default cache); ``model`` and
    ``model_options`` (``layer``, ``pool``, ``precision``, ``weights``, ``prompt_text``, ``dim``, ``tower``...,
    or ``options=``) name the vectors as ``extract`` made them. The hyperparameters are ``hubtune train``'s:
    ``normalise`` (``none``, ``l2``, ``standardise``; default standardise for linear/mlp, l2 for knn),
    ``balanced``, ``C`` (linear; default: searched on validation), ``k`` and ``temperature`` (knn),
    ``hidden`` and ``epochs`` (mlp), ``templates`` (zeroshot). With ``out`` the folder is checked before
    training and the head saved there. The head embeds new inputs through ``cache`` (its ``cache``).
    """
    from hubtune.heads.mlp import MLPConfig
    from hubtune.heads.trained import check_head_folder
    from hubtune.heads.training import train_head as fit
    from hubtune.store import EmbeddingStore
    from hubtune.store.lookup import find_fingerprint, resolved_options
    from hubtune.store.vectors import load_dataset_vectors

    check_hyperparameters(head, C, k, temperature, hidden, epochs, templates)
    chosen = load_options(options, model_options, "train_head", own=HEAD_PARAMETERS)
    if out is not None:
        check_head_folder(Path(out))
    if cache is None:
        from hubtune.constants import default_cache_dir

        cache = default_cache_dir()
    with EmbeddingStore(Path(cache), readonly=True) as store:
        fingerprint = find_fingerprint(store, model, dataset, chosen)
        data = load_dataset_vectors(store, fingerprint, dataset)
        chosen = resolved_options(store, fingerprint, chosen)  # what predict must rebuild
    record = {"ref": model, "fingerprint": fingerprint, "options": asdict(chosen)}
    built: HeadMethods
    if head == "zeroshot":
        from hubtune.heads.zeroshot import build_zeroshot_head, vectors_backbone

        backbone = vectors_backbone(model, chosen, fingerprint)
        built = build_zeroshot_head(backbone, data, record, templates)
        built.loaded_backbone = backbone  # the head's own backbone: predict need not load it again
    else:
        built = fit(data, head, record, normalisation=normalise, balanced=balanced, C=C, k=k,
                    temperature=temperature, mlp_config=MLPConfig(hidden=hidden, epochs=epochs))
    built.cache = cache
    if out is not None:
        built.save(Path(out))
    return built


#: ``train_head``'s own keyword parameters (the hyperparameters and ``out``), named when an option is unknown
HEAD_PARAMETERS = tuple(name for name, p in inspect.signature(train_head).parameters.items()
                        if p.kind is p.KEYWORD_ONLY and name != "options")


def train_report(head: "HeadMethods", path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``hubtune train`` prints for a head saved at ``path`` (its ``--json`` document)."""
    from hubtune.heads.trained import TrainedHead
    from hubtune.heads.zeroshot import ZeroShotHead

    val = head.metrics["val"]
    extra: dict[str, Any] = {}
    if isinstance(head, TrainedHead) and head.kind == "linear":
        extra["C"] = head.hyperparameters["C"]
    if isinstance(head, ZeroShotHead):
        extra.update(templates=len(head.templates), scoring=head.scoring)
    scores = {name: None if val[key] is None else round(val[key], 6)  # 6 digits, as predict's scores
              for name, key in (("val_accuracy", "accuracy"), ("balanced_accuracy", "balanced_accuracy"),
                                ("top5", "top5"), ("majority_baseline", "majority_baseline"))}
    return {"head": head.kind, "classes": head.classes, **scores, "path": str(path), **extra}
