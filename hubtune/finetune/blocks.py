"""One shape for every backbone: ``stem -> blocks[0..n-1] -> neck``.

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

from hubtune.errors import BackboneOptionError

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


def split_point(split: BlockSplit, unfreeze: int) -> int:
    """Index of the first trained block for ``--unfreeze N`` (0 <= N <= number of blocks)."""
    count = len(split.blocks)
    if not 0 <= unfreeze <= count:
        raise BackboneOptionError(f"--unfreeze {unfreeze}: this model has {count} blocks; choose 0..{count} or auto")
    return count - unfreeze


def top_parameters(split: BlockSplit, start: int) -> list[tuple[int, "torch.nn.Parameter"]]:
    """``(depth, parameter)`` of the trained part: block ``i`` has depth ``i + 1``, the neck ``n``.

    The depth is timm's layer id for layer-wise lr decay (``param_groups_layer_decay`` with the
    model's group matcher): stem 0, blocks 1..n, the final norm with the last block, the head n + 1.
    """
    count = len(split.blocks)
    found = [(index + 1, p) for index, module in enumerate(split.modules) if index >= start for p in module.parameters()]
    found += [(count, p) for module in split.neck_modules for p in module.parameters()] if start < count else []
    return found


def build_top(split: BlockSplit | None, start: int, head: "torch.nn.Module") -> "torch.nn.Module":
    """The trainable top as one module: blocks[start:] + neck + head.

    ``split=None`` is the frozen case: the inputs are already embeddings and only the head trains.
    """
    import torch.nn as nn

    class Top(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(split.modules[start:] if split else [])
            self.neck = nn.ModuleList(split.neck_modules if split else [])
            self.head = head

        def embed(self, hidden: "torch.Tensor", mask: "torch.Tensor | None") -> "torch.Tensor":
            if split is None:
                return hidden  # (B, dim)
            return split.neck(split.run(list(self.blocks), hidden, mask), mask)  # (B, dim)

        def forward(self, hidden: "torch.Tensor", mask: "torch.Tensor | None" = None) -> "torch.Tensor":
            return self.head(self.embed(hidden, mask))  # (B, classes)

    return Top()
