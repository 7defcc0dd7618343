"""One shape for every backbone: ``stem -> blocks[0..n-1] -> neck`` (part of the plugin contract).

Each source's :meth:`~hubtune.backbone.Backbone.blocks` returns a :class:`BlockSplit`, so
"unfreeze the last N blocks" means the same for a timm ResNet or ViT, a torchvision ResNet and an
hf BERT or ViT. The hidden state between blocks travels with an optional mask (text: the
``(B, L)`` attention mask, 1 for real tokens); images carry ``None``.

``split.neck(split.run(modules, *split.stem(batch)))`` equals ``backbone.forward(batch)`` for the
backbone's embedding layer (tested per source).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    import torch


@dataclass
class BlockSplit:
    """A backbone cut into parts; the modules are the backbone's own (shared, not copies)."""

    stem: Callable[[dict], tuple["torch.Tensor", "torch.Tensor | None"]]  # batch -> (hidden, mask)
    blocks: list[tuple[str, "torch.nn.Module"]]  # named, in forward order
    run: Callable[[Sequence["torch.nn.Module"], "torch.Tensor", "torch.Tensor | None"], "torch.Tensor"]
    neck: Callable[["torch.Tensor", "torch.Tensor | None"], "torch.Tensor"]  # -> (B, dim) embedding
    neck_modules: list["torch.nn.Module"]  # parameters after the blocks (a final norm), trained with them
    layer: str  # the embedding layer the neck produces (fine-tuning trains that one)

    @property
    def modules(self) -> list["torch.nn.Module"]:
        return [module for _, module in self.blocks]

    def prefix(self, batch: dict, start: int) -> tuple["torch.Tensor", "torch.Tensor | None"]:
        """The hidden state at the input of block ``start`` (all of stem and blocks before it)."""
        hidden, mask = self.stem(batch)
        return self.run(self.modules[:start], hidden, mask), mask

    def full(self, batch: dict) -> "torch.Tensor":
        """The embedding through every part (what the backbone's ``forward`` returns)."""
        hidden, mask = self.prefix(batch, len(self.blocks))
        return self.neck(hidden, mask)


def sequential_run(modules: Sequence["torch.nn.Module"], hidden: "torch.Tensor", mask: "torch.Tensor | None") -> "torch.Tensor":
    """Blocks that take and return one tensor (residual blocks, timm ViT blocks)."""
    for module in modules:
        hidden = module(hidden)
    return hidden


def flatten_stages(stages: Sequence[tuple[str, "torch.nn.Module"]]) -> list[tuple[str, "torch.nn.Module"]]:
    """Stages of residual blocks (``layer1`` = Sequential of blocks) -> the blocks, named ``layer1.0``."""
    return [(f"{name}.{child}", module) for name, stage in stages for child, module in stage.named_children()]
