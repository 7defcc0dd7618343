"""Rebuild a torchvision network without hubtune (copied beside an ``export-model`` checkpoint).

Self-contained: needs torch and torchvision. ``build(meta)`` makes the architecture with its final
``Linear`` replaced by ``Identity``, so ``embed`` returns the penultimate layer, as hubtune does.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence


def build(meta: dict[str, Any]) -> Any:
    import torch.nn as nn
    from torchvision.models import get_model

    model = get_model(meta["architecture"], weights=None, **meta.get("kwargs", {}))
    last = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
    model.set_submodule(last, nn.Identity())
    return model


def embed(model: Any, meta: dict[str, Any], inputs: Sequence[Any], pool: Callable[..., Any]) -> Any:
    return model(inputs[0])  # (B, 3, H, W) -> (B, D)
