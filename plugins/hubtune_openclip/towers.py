"""An open_clip model's towers as modules of their own, its text preprocessing, and the ViT block split.

Each tower module holds the model's own submodules under the model's own names (``visual.*`` for the
image tower; ``token_embedding``, ``transformer``, ... or ``text.*`` for the text tower), so its state
dict is a part of the model's and nothing is copied. ``forward`` is open_clip's ``encode_image`` /
``encode_text`` with ``normalize=False`` (their default): the vectors are not L2-normalised.

Imported only when a model is loaded (it imports torch and open_clip).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from hubtune.plugin import BlockSplit, Preprocessor, as_text

#: the characters of a text tokenised per token of context before a cut is tried (see ``_bounded``)
CHARS_PER_TOKEN = 16


class ImageTower(nn.Module):
    """``model.visual``: pixels -> ``encode_image`` (unnormalised)."""

    visual: Any

    def __init__(self, model: Any):
        super().__init__()
        self.visual = model.visual

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.visual(pixel_values)  # what CLIP.encode_image(x) returns (normalize=False)

    @property
    def has_tokens(self) -> bool:
        """A ViT whose final norm applies to every token (no attentional pooler)."""
        from open_clip.transformer import VisionTransformer

        return isinstance(self.visual, VisionTransformer) and self.visual.attn_pool is None

    def tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The last block's tokens (class token first) after the final norm, ``(B, 1 + L, width)``."""
        visual = self.visual
        return visual.ln_post(visual.transformer(visual._embeds(pixel_values)))


class TextTower(nn.Module):
    """The text tower: token ids -> ``encode_text`` (unnormalised).

    ``CLIP`` keeps its text tower's parts on the model itself; they are registered here under the same
    names and ``CLIP.encode_text`` runs on them. ``CustomTextCLIP`` (SigLIP, Hugging Face text towers)
    has them as ``model.text``.
    """

    PARTS = ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection")
    text: Any
    token_embedding: Any
    positional_embedding: Any
    transformer: Any
    ln_final: Any
    attn_mask: Any

    def __init__(self, model: Any):
        super().__init__()
        self.custom = hasattr(model, "text")
        if self.custom:
            self.text = model.text
            return
        for name in self.PARTS:
            setattr(self, name, getattr(model, name))
        self.register_buffer("attn_mask", model.attn_mask, persistent=False)
        self.text_pool_type = model.text_pool_type
        self.text_eos_id = getattr(model, "text_eos_id", None)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.custom:
            return self.text(input_ids)  # what CustomTextCLIP.encode_text returns (normalize=False)
        from open_clip.model import CLIP

        return CLIP.encode_text(self, input_ids)  # open_clip's own code, on the same parts

    @property
    def has_tokens(self) -> bool:
        from open_clip.transformer import TextTransformer

        return not self.custom or isinstance(self.text, TextTransformer)

    def tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The last block's tokens after the final norm, ``(B, L, width)``."""
        if self.custom:
            out = self.text.forward_intermediates(input_ids, indices=1, normalize_intermediates=True,
                                                  intermediates_only=True)
            return out["text_intermediates"][-1]
        cast = self.transformer.get_cast_dtype()
        x = self.token_embedding(input_ids).to(cast) + self.positional_embedding.to(cast)
        return self.ln_final(self.transformer(x, attn_mask=self.attn_mask))


def pad_id(tokenizer: Any) -> int:
    """The id open_clip pads with: 0 for its own BPE tokenizer, the Hugging Face tokenizer's otherwise."""
    value = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None)
    return int(value) if value is not None else 0


class TextPreprocessor(Preprocessor):
    """One text -> open_clip's token ids, padded to the context length, and the mask of its real tokens.

    Picklable (the tokenizer is open_clip's, which is); it runs in DataLoader workers.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.context_length = int(tokenizer.context_length)
        self.pad_id = pad_id(tokenizer)

    def _count(self, text: str) -> int:
        """How many tokens a text makes, before truncation."""
        if hasattr(self.tokenizer, "encode"):  # open_clip's SimpleTokenizer
            return len(self.tokenizer.encode(text))
        return len(self.tokenizer.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _bounded(self, text: str) -> str:
        """A long text cut, at a space, to a prefix that still makes more tokens than the context holds:
        the same ids after truncation, without tokenising megabytes that truncation throws away."""
        budget = self.context_length * CHARS_PER_TOKEN
        while budget < len(text):
            cut = text.rfind(" ", 0, budget)
            if cut > 0 and self._count(text[:cut]) > self.context_length:
                return text[:cut]
            budget *= 4
        return text

    def __call__(self, item: Any) -> dict[str, torch.Tensor]:
        item = as_text(item)
        ids = self.tokenizer([self._bounded(item)])[0].long()  # (context_length,)
        return {"input_ids": ids, "attention_mask": (ids != self.pad_id).long()}


class Projection(nn.Module):
    """A bare projection matrix (``visual.proj``) as a module, so fine-tuning trains it with the neck."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.proj = weight


def vit_split(tower: ImageTower, layer: str) -> BlockSplit | None:
    """open_clip's ``VisionTransformer.forward`` as stem -> ``transformer.resblocks`` -> neck, or None.

    stem: ``_embeds`` (conv1 patches, class token, positional embedding, patch dropout, ln_pre); blocks:
    the residual attention blocks, run as ``Transformer.forward`` runs them (no attention mask; sequence
    first when the transformer is not batch-first); neck: ``_pool`` (ln_post and the model's own pooling)
    then ``proj``.
    """
    from open_clip.transformer import VisionTransformer

    visual = tower.visual
    if not isinstance(visual, VisionTransformer):
        return None
    transformer = visual.transformer

    def stem(batch: dict) -> tuple[torch.Tensor, None]:
        return visual._embeds(batch["pixel_values"]), None  # (B, 1 + L, width)

    def run(modules: Sequence[nn.Module], hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if not transformer.batch_first:
            hidden = hidden.transpose(0, 1).contiguous()  # NLD -> LND
        for block in modules:
            hidden = block(hidden, attn_mask=None)
        return hidden if transformer.batch_first else hidden.transpose(0, 1)

    def neck(hidden: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        pooled, _ = visual._pool(hidden)
        return pooled @ visual.proj if visual.proj is not None else pooled

    after = [visual.ln_post, visual.attn_pool, getattr(visual, "attn_pool_contrastive", None)]
    neck_modules = [module for module in after if module is not None]
    if visual.proj is not None:
        neck_modules.append(Projection(visual.proj))
    blocks = [(f"resblocks.{index}", block) for index, block in enumerate(transformer.resblocks)]
    return BlockSplit(stem, blocks, run, neck, neck_modules, layer)
