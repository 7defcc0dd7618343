"""Which blocks ``finetune`` trains: the split point for ``--unfreeze N``, the trained parameters
with their depth (for layer-wise lr decay), and the trainable top as one module. How a backbone
declares its blocks (:class:`~hubtune.blocks.BlockSplit`) is :mod:`hubtune.blocks`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubtune.blocks import BlockSplit, flatten_stages, sequential_run
from hubtune.errors import BackboneOptionError

if TYPE_CHECKING:
    import torch

__all__ = ["BlockSplit", "build_top", "flatten_stages", "sequential_run", "split_point", "top_parameters"]


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
