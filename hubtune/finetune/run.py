"""``hubtune finetune``: choose the split, cache its activations, fit the probe, train the top, save.

The flow for ``finetune(ref, data, out)``:

1. load the backbone and split it (stem -> blocks -> neck); ``--unfreeze auto`` picks N from the
   labelled training items per class;
2. N = 0 trains the head alone on the backbone's own cached vectors (shared with ``extract``);
   N > 0 caches the activations at the input of block n - N under their own fingerprint, or, when
   asked to (``--activations auto|recompute``), runs the frozen part every epoch instead;
3. LP-FT: the frozen top's embeddings of train / val fit the linear probe, which becomes the head;
4. train the top (blocks + neck + head) with :func:`hubtune.finetune.train.train_top`;
5. save the trained tensors and the manifest as a head folder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hubtune.backbone import LoadOptions
from hubtune.errors import BackboneOptionError, HeadError
from hubtune.finetune.train import TrainConfig

if TYPE_CHECKING:
    from hubtune.backbone import Backbone

FEW_PER_CLASS = 20  # under this many training items per class, stay frozen
FEW_BLOCKS_UP_TO = 20_000  # up to this many training items, unfreeze a few blocks


@dataclass
class FinetuneConfig:
    unfreeze: int | str = "auto"
    head: str = "linear"
    hidden: list[int] = field(default_factory=lambda: [512])
    dropout: float = 0.1
    activations: str = "cache"  # cache | auto | recompute
    max_cache_gb: float = 8.0
    workers: int = 0
    extract_batch_size: int = 64
    train: TrainConfig = field(default_factory=TrainConfig)

    def head_spec(self) -> dict[str, Any]:
        return {"kind": "linear"} if self.head == "linear" else {"kind": "mlp", "hidden": self.hidden, "dropout": self.dropout}


def choose_unfreeze(requested: int | str, train_items: int, classes: int, blocks: int) -> tuple[int, str]:
    """N for ``--unfreeze``; ``auto`` follows the usual practice and says why."""
    if requested != "auto":
        return int(requested), f"--unfreeze {requested} as asked"
    per_class = train_items / max(classes, 1)
    if per_class < FEW_PER_CLASS:
        return 0, (f"{per_class:.1f} training items per class (< {FEW_PER_CLASS}): too few to move pretrained "
                   "weights safely, so the backbone stays frozen and only the head trains")
    if train_items <= FEW_BLOCKS_UP_TO:
        chosen = min(2, blocks)
        return chosen, (f"{train_items} training items (<= {FEW_BLOCKS_UP_TO:,}): the top {chosen} of {blocks} blocks "
                        "adapt to the task while the rest stays frozen")
    chosen = min(blocks, max(4, blocks // 3))
    return chosen, f"{train_items} training items (> {FEW_BLOCKS_UP_TO:,}): enough data to train the top {chosen} of {blocks} blocks"


def _labels(labels: list[str | None], splits: list[str]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Classes, ``y`` (-1 unlabelled) and the train / validation rows (as the heads split them)."""
    from hubtune.heads.training import split_indices
    from hubtune.store.vectors import DatasetVectors

    keep = np.array([i for i, label in enumerate(labels) if label is not None], dtype=np.int64)
    classes = sorted({labels[i] for i in keep})
    if len(classes) < 2:
        raise HeadError(f"a classifier needs at least two classes, the dataset has {classes}")
    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[label] if label is not None else -1 for label in labels], dtype=np.int64)
    meta = DatasetVectors(np.empty((len(keep), 0)), [""] * len(keep), [labels[i] for i in keep],
                          [splits[i] for i in keep], [""] * len(keep), 0)
    train, val = split_indices(meta, y[keep])
    if not len(val):
        raise HeadError("no validation items: add a `val` split or more items per class")
    return classes, y, keep[train], keep[val]


def finetune(ref: str, data: str | Path, out: str | Path, cache: Path, *, options: LoadOptions | None = None,
             config: FinetuneConfig | None = None, dataset_name: str | None = None, progress: bool = True,
             log: Any = None, backbone: "Backbone | None" = None) -> dict[str, Any]:
    """Fine-tune the top of ``ref`` on ``data``; save the head folder to ``out``; return the summary.

    ``backbone`` replaces loading ``ref`` (an already built one, e.g. with its own preprocessing).
    """
    from hubtune.api import load_backbone
    from hubtune.data import open_dataset
    from hubtune.finetune.activations import CachedBatches, RecomputedBatches, SplitEncoder, cache_activations, choose_mode
    from hubtune.finetune.blocks import build_top, split_point, top_parameters
    from hubtune.finetune.head import initial_head
    from hubtune.finetune.saved import FinetunedHead, top_tensors
    from hubtune.finetune.train import param_groups, recalibrate_batch_norm, run_top, train_top
    from hubtune.heads.trained import check_head_folder
    from hubtune.store import EmbeddingStore

    check_head_folder(out)
    dataset = open_dataset(data)
    name = dataset.name(dataset_name)  # checked before the model loads

    options, config = options or LoadOptions(), config or FinetuneConfig()
    say = log or (lambda message: None)
    backbone = backbone or load_backbone(ref, options)
    split = backbone.blocks()
    if backbone.layer != split.layer:
        raise BackboneOptionError(
            f"fine-tuning trains the model's embedding layer {split.layer!r}, not {backbone.layer!r}: drop --layer "
            f"{backbone.layer}" + (f" and --pool {options.pool} (the pools of {split.layer!r} are listed by "
                                   f"`hubtune info {ref}`)" if options.pool else ""))
    items = dataset.items()
    classes, _, train_rows, _ = _labels([item.label for item in items], [item.split for item in items])
    unfrozen, why = choose_unfreeze(config.unfreeze, len(train_rows), len(classes), len(split.blocks))
    start = split_point(split, unfrozen)
    say(f"unfreeze {unfrozen}: {why}")
    encoder = SplitEncoder(backbone, split, start) if unfrozen else backbone
    mode, reason = choose_mode(config.activations if unfrozen else "cache", encoder, len({i.key for i in items}),
                               config.max_cache_gb)
    say(reason)
    if mode == "cache":
        with EmbeddingStore(cache) as store:
            stored = cache_activations(encoder, dataset, store, name, config.extract_batch_size, config.workers, progress)
        labels, splits = stored.labels, stored.splits
        source: Any = CachedBatches(encoder if unfrozen else None, stored.vectors, backbone.device)
    else:
        labels, splits = [item.label for item in items], [item.split for item in items]
        source = RecomputedBatches(encoder, items)
    classes, y, train, val = _labels(labels, splits)
    batch_size = config.train.batch_size
    top = build_top(split if unfrozen else None, start, head=_placeholder()).to(backbone.device)
    recalibrate_batch_norm(top, source, train.tolist(), batch_size, backbone.autocast)
    rows, z = run_top(top, source, np.concatenate([train, val]).tolist(), batch_size, backbone.autocast, embed=True)
    where = np.full(len(y), -1)
    where[rows] = np.arange(len(rows))
    train, val = train[where[train] >= 0], val[where[val] >= 0]  # recomputing drops unreadable items
    head, probe = initial_head(config.head_spec(), z[where[train]], y[train], z[where[val]], y[val], len(classes),
                               config.train.seed)
    top.head = head.to(backbone.device)
    for parameter in top.parameters():
        parameter.requires_grad_(True)
    depths = top_parameters(split, start) if unfrozen else []
    depths += [(len(split.blocks) + 1, p) for p in top.head.parameters()]
    groups = param_groups(depths, len(split.blocks) + 1, config.train.lr, config.train.weight_decay, config.train.layer_decay)
    result = train_top(top, groups, source, y, train, val, config.train, backbone.autocast, backbone.precision, progress)
    fingerprint = encoder.fingerprint("float16")
    model = {"ref": ref, "options": asdict(backbone.load_options()), "fingerprint": fingerprint,
             "backbone_fingerprint": backbone.fingerprint(), "start": start, "unfrozen": unfrozen,
             "blocks": [n for n, _ in split.blocks], "trained_blocks": [n for n, _ in split.blocks[start:]]}
    summary = {"unfrozen": unfrozen, "unfreeze_reason": why, "val_accuracy": result.val_accuracy,
               "probe_val_accuracy": probe["probe_val_accuracy"], "best_epoch": result.best_epoch,
               "epochs_run": result.epochs_run, "activations": mode, "activations_reason": reason,
               "trained_blocks": model["trained_blocks"], "classes": classes, "head": config.head, "path": str(out)}
    hyper = {**asdict(config.train), "probe_C": probe["probe_C"], "activations": mode}
    FinetunedHead(classes, model, config.head_spec(), top_tensors(backbone, top), hyper,
                  {"val": {"accuracy": result.val_accuracy, "probe_accuracy": probe["probe_val_accuracy"]},
                   "history": result.history}).save(out)
    return summary


def _placeholder() -> Any:
    """The head slot before the probe is fitted (the first pass only needs the embeddings)."""
    import torch.nn as nn

    return nn.Identity()
