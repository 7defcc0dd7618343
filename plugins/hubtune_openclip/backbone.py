"""The backbones of an open_clip model's two towers.

Layers: ``embeds`` (default): the projected embedding, what ``encode_image`` / ``encode_text`` return
(unnormalised), pooled by the model itself (``native``); ``tokens``: the last block's tokens after the
final norm, where the tower has them (open_clip's ViT image tower, its own text transformers), pooled
by hubtune (images: ``cls`` by default; texts: ``mean`` over real tokens; a causal text tower's first
token sees only the start token, so ``cls`` is not offered there).

Both towers' backbones share one loaded model: :meth:`OpenClipBackbone.tower_backbone` gives the other
tower without loading anything again.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hubtune.plugin import (
    POOLED, TEXT_TOKENS, TOKENS, Backbone, BackboneOptionError, BlockSplit, ImagePreprocessor, LayerPools, LoadOptions,
    pool_tokens,
)
from hubtune_openclip.source import Built
from hubtune_openclip.towers import ImageTower, TextPreprocessor, TextTower, vit_split

EMBEDDING = "embeds"  # the name the hf two-tower adapter gives the same output
TOKENS_LAYER = "tokens"


class OpenClipBackbone(Backbone):
    """One tower of an open_clip model (``self.tower`` is its name, and its ``modality``)."""

    model: Any  # the tower module (towers.ImageTower or towers.TextTower)

    def __init__(self, *, built: Built, **kwargs: Any):
        super().__init__(**kwargs)
        self.built = built
        self.tower = self.modality

    def tower_backbone(self, tower: str) -> "OpenClipBackbone":
        """The same model's backbone for ``tower`` (``image``/``text``), sharing the loaded weights (nothing is
        loaded or fetched again): the projected embedding, the same ``--dim``, device and precision, so its
        vectors are in this one's space. Only the ``embeds`` layer is shared by both towers."""
        if tower == self.modality:
            return self
        if tower not in ("image", "text"):
            raise self.tower_error(tower)
        if self.layer not in (None, EMBEDDING):
            raise BackboneOptionError(f"{self.ref}: layer {self.layer!r} of the {self.modality} tower is not in the "
                                      f"space the {tower} tower embeds into; use the default layer ({EMBEDDING!r})")
        options = replace(self.options, tower=tower, layer=None, pool=None, prompt=None, prompt_text=None,
                          dim=self.truncate_dim, device=str(self.device), precision=self.precision)
        other = tower_backbone(self.built, tower, options)
        other.choose(options)
        return other

    def zeroshot_templates(self) -> list[str]:
        """open_clip's zero-shot ImageNet templates (``OPENAI_IMAGENET_TEMPLATES``, OpenAI CLIP's 80), which
        its own zero-shot evaluation uses for every model, SigLIP included."""
        from open_clip import OPENAI_IMAGENET_TEMPLATES

        return [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]

    def zeroshot_scoring(self) -> tuple[str, float, float]:
        """CLIP: ``softmax(s * cos)``; models with a ``logit_bias`` (SigLIP): ``sigmoid(s * cos + b)``;
        ``s = exp(logit_scale)``, as the model's own ``get_logits`` computes them."""
        bias = self.logit_bias()
        return ("softmax", self.logit_scale(), 0.0) if bias is None else ("sigmoid", self.logit_scale(), bias)

    def logit_scale(self) -> float:
        """``exp(logit_scale)``: what the model multiplies image-text cosine similarities by."""
        return float(self.built.model.logit_scale.detach().exp().reshape(-1)[0])

    def logit_bias(self) -> float | None:
        """The bias SigLIP-style models add to the scaled similarities; None for CLIP."""
        bias = getattr(self.built.model, "logit_bias", None)
        return None if bias is None else float(bias.detach().reshape(-1)[0])

    def pools(self, layer: str) -> LayerPools:
        return POOLED if layer == EMBEDDING else self.token_pools()

    def token_pools(self) -> LayerPools:
        raise NotImplementedError


class OpenClipImageBackbone(OpenClipBackbone):
    modality = "image"

    def token_pools(self) -> LayerPools:
        return TOKENS.with_default("cls")

    def forward(self, batch: dict) -> Any:
        pixels = batch["pixel_values"]  # (B, 3, H, W)
        if self.layer == EMBEDDING:
            return self.model(pixels)  # (B, embed_dim)
        return pool_tokens(self.model.tokens(pixels), None, str(self.pool))

    def blocks(self) -> BlockSplit:
        split = vit_split(self.model, EMBEDDING)
        if split is None:
            raise BackboneOptionError(
                f"{self.ref}: only open_clip's own ViT image towers split into blocks for fine-tuning, not this "
                f"{type(self.model.visual).__name__}; train a head on its frozen vectors instead (`hubtune train`)"
            )
        return split


class OpenClipTextBackbone(OpenClipBackbone):
    modality = "text"

    def probe_item(self) -> str:
        return "a photo of a cat"

    def token_pools(self) -> LayerPools:
        return TEXT_TOKENS.without("cls")

    def forward(self, batch: dict) -> Any:
        ids = batch["input_ids"]  # (B, context_length)
        if self.layer == EMBEDDING:
            return self.model(ids)  # (B, embed_dim)
        return pool_tokens(self.model.tokens(ids), batch["attention_mask"], str(self.pool))

    def blocks(self) -> BlockSplit:
        raise BackboneOptionError(
            f"{self.ref}: the open_clip source splits only the image tower into blocks; the text tower cannot be "
            "partially fine-tuned. Train a head on its frozen vectors instead (`hubtune train`)"
        )


def tower_backbone(built: Built, tower: str, options: LoadOptions) -> OpenClipBackbone:
    """The backbone of one tower of a loaded model (``tower``: ``image`` or ``text``)."""
    common: dict[str, Any] = dict(ref=built.ref, revision=built.revision, options=options, built=built)
    if tower == "text":
        module = TextTower(built.model)
        return OpenClipTextBackbone(
            model=module, preprocessor=TextPreprocessor(built.tokenizer), preprocess_config=built.text_config,
            layers=[EMBEDDING, *([TOKENS_LAYER] if module.has_tokens else [])], **common,
        )
    if tower != "image":
        raise BackboneOptionError(f"{built.ref} has an image and a text tower, not {tower!r}")
    image = ImageTower(built.model)
    return OpenClipImageBackbone(
        model=image, preprocessor=ImagePreprocessor(built.transform), preprocess_config=built.image_config,
        layers=[EMBEDDING, *([TOKENS_LAYER] if image.has_tokens else [])], **common,
    )
