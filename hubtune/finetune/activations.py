"""Split-point activations: the frozen prefix's output, cached once, read every epoch.

For ``--unfreeze N`` the frozen part (stem + blocks[0 .. n-N-1]) is a fixed function, so its output
at the input of block ``n - N`` is computed once and stored in the embedding store like any other
vector: :class:`SplitEncoder` is that prefix dressed as a :class:`~hubtune.backbone.Backbone`, so the
extractor's batching, resume, progress and LMDB writer all apply unchanged. Its fingerprint is the
backbone's with ``layer = "split:<block name>"`` and ``pool = "none"``: another split point, model,
revision or preprocessing never reads these rows.

A row is the flattened float16 activation, ``C*H*W`` for a feature map or ``L*D`` for tokens; for
text the ``(L,)`` attention mask follows it, and sequences are padded to the tokeniser's
``max_length`` so every row has the same width. The shape is recorded with the fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from hubtune.backbone import Backbone
from hubtune.errors import ActivationCacheError

if TYPE_CHECKING:
    import torch

    from hubtune.data import Item
    from hubtune.finetune.blocks import BlockSplit
    from hubtune.pooling import LayerPools
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import DatasetVectors

ACTIVATION_MODES = ("cache", "auto", "recompute")


class SplitEncoder(Backbone):
    """The frozen prefix of ``backbone`` up to block ``start``: raw input -> flattened activations."""

    def __init__(self, backbone: Backbone, split: "BlockSplit", start: int):
        import torch

        self.backbone = backbone  # the whole network (export and the trained top live there)
        self.split = split
        self.start = start
        self.modality = backbone.modality
        self.max_length = int(backbone.preprocess_config.get("max_length") or 0)
        super().__init__(
            ref=backbone.ref, revision=backbone.revision, model=backbone.model, preprocessor=backbone.preprocessor,
            preprocess_config=backbone.preprocess_config, layers=[f"split:{split.blocks[start][0]}"],
            options=backbone.options,
        )
        self.select()  # its one layer, unpooled
        self.probe_item = backbone.probe_item  # type: ignore[method-assign]
        sample = self.to_device(self.preprocessor.collate([self.preprocessor(self.probe_item())]))
        with torch.no_grad():
            hidden, _ = split.prefix(sample, start)
        self.shape = [self.max_length, hidden.shape[-1]] if self.modality == "text" else list(hidden.shape[1:])

    def pools(self, layer: str) -> "LayerPools":
        from hubtune.pooling import LayerPools

        return LayerPools(("none",), "none")

    def activations(self, batch: dict) -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """The prefix's output for a collated batch on the device: ``(hidden, mask)``."""
        return self.split.prefix(batch, self.start)

    def forward(self, batch: dict) -> "torch.Tensor":
        import torch
        import torch.nn.functional as F

        hidden, mask = self.activations(batch)
        if mask is None:
            return hidden.flatten(1)  # (B, C*H*W) or (B, L*D), in logical order
        pad = self.max_length - hidden.shape[1]  # right padding to a fixed width
        hidden, mask = F.pad(hidden, (0, 0, 0, pad)), F.pad(mask, (0, pad))
        return torch.cat([hidden.flatten(1), mask.to(hidden.dtype)], 1)  # (B, L*D + L)

    def unflatten(self, rows: "torch.Tensor") -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """Rows as stored -> ``(hidden, mask)`` the top runs on; text is trimmed to its longest item."""
        if self.modality != "text":
            return rows.view(len(rows), *self.shape), None
        length, width = self.shape
        mask = rows[:, length * width:].round().long()  # (B, L)
        used = max(int(mask.sum(1).max()), 1) if len(rows) else 1
        return rows[:, : length * width].view(len(rows), length, width)[:, :used], mask[:, :used]

    def shape_record(self) -> dict[str, Any]:
        return {"hidden": self.shape, **({"mask": self.shape[0]} if self.modality == "text" else {})}


def cache_bytes(encoder: Backbone, rows: int) -> int:
    """What ``rows`` split-point rows take in the store (float16)."""
    return rows * encoder.dim * 2


def choose_mode(mode: str, encoder: Backbone, rows: int, max_cache_gb: float) -> tuple[str, str]:
    """``cache`` or ``recompute``, and why; ``cache`` over the budget is refused with the size."""
    need = cache_bytes(encoder, rows)
    size = f"{rows} items x {encoder.dim} float16 values = " + (f"{need / 1e9:.2f} GB" if need >= 1e8 else f"{need / 1e6:.1f} MB")
    if mode == "recompute":
        return "recompute", f"asked to recompute the frozen part each epoch ({size} if cached)"
    if need <= max_cache_gb * 1e9:
        return "cache", f"cached split-point activations: {size}"
    if mode == "auto":
        return "recompute", f"the activations would take {size}, over --max-cache-gb {max_cache_gb:g}: recomputing"
    raise ActivationCacheError(
        f"the split-point activations would take {size}, over --max-cache-gb {max_cache_gb:g}; raise "
        "--max-cache-gb, unfreeze fewer blocks (activations deeper in a net are usually smaller), or pass "
        "--activations auto / recompute to run the frozen part each epoch instead"
    )


def cache_activations(encoder: Backbone, dataset: Any, store: "EmbeddingStore", name: str,
                      batch_size: int, workers: int, progress: bool) -> "DatasetVectors":
    """Extract the split-point activations of ``dataset`` into the store (once); return them, float16.

    ``encoder`` is a :class:`SplitEncoder`, or the backbone itself when nothing is unfrozen.
    """
    from hubtune.extract import extract
    from hubtune.store.vectors import load_dataset_vectors

    fingerprint = encoder.fingerprint("float16")
    shape = encoder.shape_record() if isinstance(encoder, SplitEncoder) else None  # the backbone itself: plain vectors
    store.register(fingerprint, encoder.fingerprint_fields("float16"), encoder.dim, "float16", shape)
    extract(str(encoder.ref), dataset, store, dataset_name=name, backbone=encoder, batch_size=batch_size,
            workers=workers, stored_dtype="float16", progress=progress)
    return load_dataset_vectors(store, fingerprint, name, dtype="float16")


@dataclass
class RecomputedBatches:
    """The fallback: each epoch reads, preprocesses and runs the frozen prefix again."""

    encoder: SplitEncoder
    items: list["Item"]

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[tuple[list[int], Any, Any]]:
        """``(rows, hidden, mask)`` for the items at ``order``, in batches (unreadable items dropped)."""
        import torch

        from hubtune.extract.batches import windowed_batches

        chosen = [self.items[i] for i in order]
        for positions, batch, _ in windowed_batches(self.encoder.preprocessor, chosen, batch_size, batch_size):
            if batch is None:
                continue
            with torch.no_grad(), self.encoder.autocast():  # no_grad, not inference_mode: the top trains on these
                hidden, mask = self.encoder.activations(self.encoder.to_device(batch))
            yield [order[i] for i in positions], hidden.float(), mask


@dataclass
class CachedBatches:
    """Batches read from the cached rows in memory (float16); ``encoder=None``: rows are embeddings."""

    encoder: SplitEncoder | None
    rows: "Any"  # (N, dim) float16 numpy
    device: "torch.device"

    def batches(self, order: Sequence[int], batch_size: int) -> Iterator[tuple[list[int], Any, Any]]:
        import torch

        for start in range(0, len(order), batch_size):
            chunk = list(order[start : start + batch_size])
            x = torch.from_numpy(self.rows[chunk]).to(self.device).float()
            if self.encoder is None:
                yield chunk, x, None
                continue
            hidden, mask = self.encoder.unflatten(x)
            if self.encoder.channels_last and hidden.ndim == 4:
                hidden = hidden.contiguous(memory_format=torch.channels_last)
            yield chunk, hidden, mask
