"""Rebuild a timm network without hubtune (copied beside an ``export-model`` checkpoint).

Self-contained: needs torch and timm. ``build(meta)`` makes the architecture with the checkpoint's
classifier shape and global pool; ``embed`` is timm's own feature vector (``pre_logits``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence


def build(meta: dict[str, Any]) -> Any:
    import timm

    kwargs = {"global_pool": meta["global_pool"]} if meta.get("global_pool") is not None else {}
    return timm.create_model(meta["architecture"], pretrained=False, num_classes=meta["num_classes"], **kwargs)


def embed(model: Any, meta: dict[str, Any], inputs: Sequence[Any], pool: Callable[..., Any]) -> Any:
    return model.forward_head(model.forward_features(inputs[0]), pre_logits=True)  # (B, 3, H, W) -> (B, D)
