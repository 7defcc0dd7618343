"""Pooling a layer's output to one vector per item.

Token sequences ``(B, L, D)`` pool with ``cls``, ``mean``, ``max``, ``gem`` or ``none``; feature maps
``(B, C, H, W)`` with ``avg``, ``max``, ``gem`` or ``none``. ``mean`` and ``avg`` are the same idea
and are accepted on both (canonicalised per shape, so the fingerprint does not depend on the
spelling). ``none`` flattens everything, for layers whose shape is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Mapping

from hubtune.errors import BackboneOptionError

if TYPE_CHECKING:
    import torch

POOLS = ("cls", "mean", "avg", "max", "gem", "none")
TOKEN_POOLS = ("cls", "mean", "max", "gem", "none")
MAP_POOLS = ("avg", "max", "gem", "none")
#: the pooling of a layer the model pools itself (timm's ``pre_logits``, torchvision's penultimate layer)
NATIVE = "native"
GEM_P = 3.0
GEM_EPS = 1e-6


@dataclass(frozen=True)
class LayerPools:
    """What ``--pool`` may be for one layer, as its backbone declares it.

    ``names`` are the canonical pool names the layer accepts, ``default`` the one used when
    ``--pool`` is unset, and ``aliases`` other spellings of the same pooling (``mean`` of a feature
    map is ``avg``). The core validates ``--pool`` against this and records the canonical name, so a
    recorded pooling always passes the same check again.
    """

    names: tuple[str, ...]
    default: str
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.default not in self.names:
            raise ValueError(f"default pooling {self.default!r} is not among {self.names}")

    def without(self, *names: str) -> "LayerPools":
        """The same pools less ``names`` (a text's token count varies, so ``none`` has no fixed width)."""
        return replace(self, names=tuple(name for name in self.names if name not in names))

    def with_default(self, default: str) -> "LayerPools":
        """The same pools with another default (``cls`` for a ViT's tokens, a repository's own mode)."""
        return replace(self, default=self.aliases.get(default, default))

    def canonical(self, pool: str | None, layer: str, model: str) -> str:
        """The canonical name of ``pool`` (``None``: the default); an error lists what applies."""
        if pool is None:
            return self.default
        name = self.aliases.get(pool, pool)
        if name not in self.names:
            raise BackboneOptionError(
                f"{model}: --pool {pool} does not apply to layer {layer!r}; it accepts {', '.join(self.names)} "
                f"(default {self.default}); `hubtune info {model} --layer {layer}` shows them"
            )
        return name


#: a token sequence ``(B, L, D)``
TOKENS = LayerPools(TOKEN_POOLS, "mean", {"avg": "mean"})
#: a text's token sequence: its length varies with the text, so flattening it (``none``) does not apply
TEXT_TOKENS = TOKENS.without("none")
#: a feature map ``(B, C, H, W)``
FEATURE_MAP = LayerPools(MAP_POOLS, "avg", {"mean": "avg"})
#: an output the model has already pooled to ``(B, D)``
POOLED = LayerPools((NATIVE,), NATIVE)


def pools_for_rank(ndim: int) -> LayerPools:
    """The pools that apply to an output of ``ndim`` dimensions (3: tokens, 4: a feature map, 2: pooled)."""
    if ndim == 3:
        return TOKENS
    if ndim == 4:
        return FEATURE_MAP
    if ndim == 2:
        return POOLED
    return LayerPools(("none",), "none")


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
