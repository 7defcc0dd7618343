"""``compare``: rank backbones for a labelled dataset, model by model.

For each model: load it (with the shared options; a two-tower model with the data's tower), extract
the dataset through the store (:func:`hubtune.extract.extract`, as ``hubtune extract`` does: what is
cached is reused), fit the kNN head and the linear probe with ``hubtune train``'s own code and defaults
(:func:`hubtune.heads.training.train_head`) on the training items, score them on the scored items
(:mod:`hubtune.compare.split`) as ``hubtune eval`` scores, and measure the extraction rate on this
machine. A model that fails (not found, wrong modality, load error) gets a row with its ``error``
and no accuracies; the others go on. A model its source says is of the wrong kind for the data
(:meth:`hubtune.sources.Source.modality`) is refused before it is loaded.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from hubtune.backbone import LoadOptions
from hubtune.compare.rank import mark_pareto, ranked
from hubtune.compare.split import HOLDOUT, EvaluationSplit, accuracy, evaluation_split, positions, scored_rows, training_data
from hubtune.data import Dataset, Item, open_dataset
from hubtune.data.dataset import ListedDataset
from hubtune.embedding import load_options
from hubtune.errors import DatasetError, HubtuneError, TowerError
from hubtune.extract.options import ExtractOptions
from hubtune.store import EmbeddingStore

if TYPE_CHECKING:
    from hubtune.backbone import Backbone

logger = logging.getLogger("hubtune")

#: items the short timed pass embeds when the vectors were all cached
TIMED_ITEMS = 32
#: the head kinds compare fits, in this order
HEADS = ("knn", "linear")
#: every row's fields, in the order ``--json`` prints them
FIELDS = ("ref", "fingerprint", "dim", "params_m", "items_per_s", "knn_accuracy", "linear_accuracy", "pareto",
          "throughput_from", "evaluated_on", "train_items", "test_items", "computed", "cached", "failed", "seconds",
          "error")


def compare(
    models: Sequence[str],
    data: str | Path | Dataset,
    *,
    cache: str | Path | None = None,
    options: LoadOptions | None = None,
    dataset_name: str | None = None,
    batch_size: int = 64,
    workers: int = 0,
    streams: int | None = None,
    stored_dtype: str = "float16",
    seed: int = 0,
    holdout: float = HOLDOUT,
    timed_items: int = TIMED_ITEMS,
    progress: bool = True,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Rank ``models`` on the labelled dataset ``data``; one row (a dict, fields :data:`FIELDS`) per model,
    best first (linear accuracy, then kNN accuracy; failed models last), ``pareto`` marking the models no
    other beats on both linear accuracy and items/s.

    ``options`` (or keyword ``overrides`` of its fields: ``weights="random"``, ``precision="fp32"``, ...)
    apply to every model; another keyword is a ``TypeError`` naming the valid ones, as in ``hubtune.embed``. ``cache`` is the store (default: hubtune's default cache); ``dataset_name``,
    ``batch_size``, ``workers``, ``streams`` and ``stored_dtype`` are ``extract``'s. Scored on the
    dataset's ``test`` split, or without one on a stratified ``holdout`` fraction drawn with ``seed``.
    ``items_per_s`` is the extraction rate: from the extraction when it embedded at least
    ``timed_items`` items (or all of them), else from a pass over the first ``timed_items`` items into a
    scratch store (``throughput_from``: ``extract`` or ``timed``).
    """
    from hubtune.constants import default_cache_dir

    models = [models] if isinstance(models, str) else list(models)
    if not models:
        raise HubtuneError("compare needs at least one model reference")
    options = load_options(options, overrides, "compare")
    run = ExtractOptions(options=options, dataset_name=dataset_name, batch_size=batch_size, workers=workers,
                         stored_dtype=stored_dtype, progress=progress, streams=streams)
    dataset = data if isinstance(data, Dataset) else open_dataset(data)
    dataset.name(dataset_name)  # a name the store refuses stops here, not once per model
    items = dataset.items()
    dataset = ListedDataset(dataset.location, dataset.modality, tuple(items))  # hashed once, not once per model
    split = evaluation_split(items, seed, holdout)
    rows = []
    with EmbeddingStore(Path(cache) if cache is not None else default_cache_dir()) as store:
        for number, ref in enumerate(models, 1):
            with _model_bar(f"[{number}/{len(models)}] {ref}", progress) as stage:
                rows.append(_compare_one(ref, dataset, items, split, store, run, timed_items, stage))
    return ranked(mark_pareto(rows))


def empty_row(ref: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(FIELDS)
    row.update(ref=ref, pareto=False)
    return row


def _compare_one(ref: str, dataset: Dataset, items: list[Item], split: EvaluationSplit, store: EmbeddingStore,
                 run: ExtractOptions, timed_items: int, stage: Any) -> dict[str, Any]:
    from hubtune.extract import extract
    from hubtune.extract.run import known_modality
    from hubtune.heads.training import train_head
    from hubtune.store.lookup import resolved_options
    from hubtune.store.vectors import load_dataset_vectors

    row = empty_row(ref)
    row["evaluated_on"] = split.kind
    started = time.perf_counter()
    try:
        stage("load")
        kind = known_modality(dataset)
        declared = _declared_modality(ref) if kind is not None else None
        if declared is not None and kind not in declared.split("+"):  # refused without loading it
            raise _wrong_kind(dataset, ref, declared)
        options = run.options
        if options.tower is None and kind is not None:  # as extract asks for the data's tower
            options = replace(options, tower=kind)
        backbone = _load(ref, dataset, options)
        row["dim"], row["params_m"] = backbone.dim, parameters_m(backbone)
        stage("extract")
        # the loaded backbone is handed in (one load per model); --dim goes extract's own way (cut from
        # cached full-size vectors)
        summary = extract(ref, dataset, store, replace(run, options=options),
                          backbone=None if options.dim is not None else backbone)
        if summary.fingerprint is None:
            raise DatasetError(f"{dataset.location} has no items to embed")
        fingerprint = summary.fingerprint
        row.update(fingerprint=fingerprint, computed=summary.computed, cached=summary.cached, failed=summary.failed)
        vectors = load_dataset_vectors(store, fingerprint, summary.dataset)
        at = positions(vectors, items)
        train, scored = training_data(vectors, at, split), scored_rows(vectors, at, split)
        # the model record `hubtune train` writes; it does not change the fit
        model = {"ref": ref, "fingerprint": fingerprint, "options": asdict(resolved_options(store, fingerprint, run.options))}
        for kind in HEADS:
            stage(kind)
            head = train_head(train, kind, model)
            row[f"{kind}_accuracy"], row["test_items"] = accuracy(head, vectors, scored, fingerprint)
        row["train_items"] = sum(1 for label, name in zip(train.labels, train.splits)
                                 if label is not None and name in ("train", "val"))
        stage("throughput")
        if summary.items_per_s > 0 and summary.computed >= min(timed_items, len(set(vectors.keys))):
            row["items_per_s"], row["throughput_from"] = summary.items_per_s, "extract"
        else:
            row["items_per_s"], row["throughput_from"] = timed_rate(ref, dataset, backbone, run, options, timed_items), "timed"
    except Exception as exc:  # one model's failure is its row's, never the others'
        row["error"] = str(exc) if isinstance(exc, HubtuneError) else f"{type(exc).__name__}: {exc}"
        row["knn_accuracy"] = row["linear_accuracy"] = None
        logger.warning("%s: %s", ref, row["error"])
    stage("failed" if row["error"] else "done")
    row["seconds"] = round(time.perf_counter() - started, 3)
    return row


def _load(ref: str, dataset: Dataset, options: LoadOptions) -> "Backbone":
    """The backbone, as the extractor loads it: a model without a tower for the data's kind is refused
    with what the data holds and what the model embeds."""
    from hubtune.api import load_backbone

    try:
        return load_backbone(ref, options)
    except TowerError as exc:
        raise _wrong_kind(dataset, ref, exc.modality) from exc


def _declared_modality(ref: str) -> str | None:
    """What ``ref`` embeds where its source tells without loading it (:meth:`hubtune.sources.Source.modality`:
    ``image``, ``text``, ``image+text``); None where only loading tells, or the reference does not resolve
    (the load then says why, as it always has)."""
    from hubtune.registry import get_source, resolve_ref

    try:
        parsed = resolve_ref(ref)
        return get_source(str(parsed.source)).modality(parsed)
    except Exception:  # an unknown name, a plugin's broken answer: the load reports it
        return None


def _wrong_kind(dataset: Dataset, ref: str, modality: str) -> DatasetError:
    article = "an" if modality.startswith("image") else "a"
    return DatasetError(f"{dataset.location} holds {dataset.modality}s but {ref} is {article} {modality} model; "
                        f"it cannot be compared on this dataset")


def parameters_m(backbone: "Backbone") -> float:
    """The network's parameter count, in millions."""
    return round(sum(p.numel() for p in backbone.model.parameters()) / 1e6, 3)


def timed_rate(ref: str, dataset: Dataset, backbone: "Backbone", run: ExtractOptions, options: LoadOptions,
               count: int) -> float:
    """Items/s of the extractor over the dataset's first ``count`` items, with the run's settings, into a
    scratch store (the real one already holds them), the loaded backbone handed in.

    The batches are cut so that each of the run's streams gets two (at most the run's batch size): one
    batch of a few dozen items would leave the other stream idle and nothing to decode beside the
    forward, and measured about half the rate of the whole run on a 2-core CPU."""
    import math
    import tempfile

    from hubtune.extract import cpu_streams, extract

    streams = run.streams if run.streams is not None else cpu_streams(backbone)
    batch_size = max(1, min(run.batch_size, math.ceil(count / (2 * streams))))
    timed = replace(run, options=options, progress=False, batch_size=batch_size, streams=streams)
    with tempfile.TemporaryDirectory(prefix="hubtune-compare-") as scratch, EmbeddingStore(scratch) as store:
        summary = extract(ref, dataset, store, timed, shard=(0, count), backbone=backbone)
    if not summary.computed:
        raise DatasetError(f"none of the first {count} items of {dataset.location} could be embedded to time {ref}")
    return summary.items_per_s


class _Stages:
    """Moves a model's bar through its stages (load, extract, knn, linear, throughput)."""

    STEPS = ("load", "extract", *HEADS, "throughput")

    def __init__(self, bar: Any, task: Any):
        self.bar, self.task = bar, task

    def __call__(self, name: str) -> None:
        if name in self.STEPS or name == "done":
            self.bar.update(self.task, completed=self.STEPS.index(name) if name in self.STEPS else len(self.STEPS))
        self.bar.update(self.task, stage=name)


@contextmanager
def _model_bar(label: str, enabled: bool) -> Iterator[_Stages]:
    """A rich progress bar on stderr for one model, through its stages (extract's own bar nests inside)."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[stage]}"),
                  TimeElapsedColumn(), console=Console(stderr=True), disable=not enabled) as bar:
        yield _Stages(bar, bar.add_task(label, total=len(_Stages.STEPS), stage="load"))
