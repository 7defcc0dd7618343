"""Pooling a layer's output to one vector per item.

Token sequences ``(B, L, D)`` pool with ``cls``, ``mean``, ``max``, ``gem`` or ``none``; feature maps
``(B, C, H, W)`` with ``avg``, ``max``, ``gem`` or ``none``. ``mean`` and ``avg`` are the same idea
and are accepted on both (canonicalised per shape, so the fingerprint does not depend on the
spelling). ``none`` flattens everything, for layers whose shape is fixed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubtune.errors import BackboneOptionError

if TYPE_CHECKING:
    import torch

POOLS = ("cls", "mean", "avg", "max", "gem", "none")
TOKEN_POOLS = ("cls", "mean", "max", "gem", "none")
MAP_POOLS = ("avg", "max", "gem", "none")
GEM_P = 3.0
GEM_EPS = 1e-6


def canonical_pool(pool: str, ndim: int) -> str:
    """The canonical name of ``pool`` for an output with ``ndim`` dimensions (3 tokens, 4 map)."""
    if pool not in POOLS:
        raise BackboneOptionError(f"unknown pooling {pool!r}; expected one of {', '.join(POOLS)}")
    if ndim == 3:
        pool = "mean" if pool == "avg" else pool
        allowed = TOKEN_POOLS
    elif ndim == 4:
        pool = "avg" if pool == "mean" else pool
        allowed = MAP_POOLS
    else:
        allowed = ("none",)
    if pool not in allowed:
        kind = {3: "a token sequence", 4: "a feature map"}.get(ndim, f"a {ndim}-d output")
        raise BackboneOptionError(f"pooling {pool!r} does not apply to {kind}; expected one of {', '.join(allowed)}")
    return pool


def pool_tokens(hidden: "torch.Tensor", mask: "torch.Tensor | None", pool: str) -> "torch.Tensor":
    """(B, L, D) -> (B, D) (or (B, L*D) for ``none``); ``mask`` (B, L) marks real tokens."""
    if pool == "cls":
        return hidden[:, 0]
    if pool == "none":
        return hidden.flatten(1)
    if mask is None:
        mask = hidden.new_ones(hidden.shape[:2])
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    if pool == "mean":
        # same clamp as sentence-transformers' Pooling, for parity
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if pool == "max":
        return hidden.masked_fill(weights == 0, -1e9).max(1).values
    if pool == "gem":
        powered = hidden.clamp(min=GEM_EPS).pow(GEM_P) * weights
        return (powered.sum(1) / weights.sum(1).clamp(min=1e-9)).pow(1.0 / GEM_P)
    raise BackboneOptionError(f"pooling {pool!r} does not apply to a token sequence")


def pool_map(features: "torch.Tensor", pool: str) -> "torch.Tensor":
    """(B, C, H, W) -> (B, C) (or (B, C*H*W) for ``none``)."""
    if pool == "avg":
        return features.mean((2, 3))
    if pool == "max":
        return features.amax((2, 3))
    if pool == "gem":
        return features.clamp(min=GEM_EPS).pow(GEM_P).mean((2, 3)).pow(1.0 / GEM_P)
    if pool == "none":
        return features.flatten(1)
    raise BackboneOptionError(f"pooling {pool!r} does not apply to a feature map")


def pool_any(output: "torch.Tensor", pool: str, mask: "torch.Tensor | None" = None) -> "torch.Tensor":
    """Pool a (B, L, D) sequence or (B, C, H, W) map; 2-d outputs pass through."""
    if output.ndim == 2:
        return output
    if output.ndim == 3:
        return pool_tokens(output, mask, pool)
    if output.ndim == 4:
        return pool_map(output, pool)
    return output.flatten(1)
