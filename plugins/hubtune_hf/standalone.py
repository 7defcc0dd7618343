"""Rebuild a transformers network without hubtune (copied beside an ``export-model`` checkpoint).

Self-contained: needs torch and transformers. ``build(meta)`` makes the model from its recorded
config (and, for a sentence-transformers pipeline, its ``sentence_head``: the Dense and Normalize
modules after pooling); ``embed`` pools ``last_hidden_state`` as hubtune does.

It is also where hubtune's hf text backbone takes that pipeline's numerics from (:func:`pool_text`,
:class:`Dense`, :class:`Normalize`), so an exported model computes exactly what hubtune computed.
The pooling follows sentence-transformers 6.2's ``Pooling`` (padded inputs) to the letter: ``cls`` is
the first attended token, ``lasttoken`` the last, ``weightedmean`` weights positions from the first
attended token, and a prompt excluded from pooling (``include_prompt: false``) is masked after any
left padding. Text inputs: ``(input_ids, attention_mask)`` tokenised with the repository's tokenizer,
padded on ``meta["preprocess"]["padding"]``'s side, each text prefixed with ``meta["prompt"]`` (if any).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the module name the sentence-transformers steps after pooling live under, inside the transformers model
SENTENCE_HEAD = "sentence_head"
#: the activations a Dense module may name: torch.nn classes, built with their default arguments
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU", "Softplus", "LeakyReLU", "ELU", "Mish")
GEM_P = 3.0


class Dense(nn.Module):
    """sentence-transformers' ``Dense``: ``activation(linear(x))`` (+ the input, projected if its width
    differs, with ``residual``). Tensor names match its ``model.safetensors`` (``linear.*``, ``residual.*``)."""

    def __init__(self, step: dict[str, Any]):
        super().__init__()
        if step["activation"] not in ACTIVATIONS:
            raise ValueError(f"Dense activation {step['activation']!r} is not one of {ACTIVATIONS}")
        self.linear = nn.Linear(step["in"], step["out"], bias=step["bias"])
        self.activation = getattr(nn, step["activation"])()
        self.use_residual = bool(step.get("residual"))
        self.residual = nn.Linear(step["in"], step["out"], bias=False) \
            if self.use_residual and step["in"] != step["out"] else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.linear(x))
        if self.use_residual:
            out = out + (x if self.residual is None else self.residual(x))
        return out


class Normalize(nn.Module):
    """L2 normalisation of the sentence vector (float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), p=2, dim=-1)


def sentence_head(steps: Sequence[dict[str, Any]]) -> nn.Sequential:
    """The modules after pooling, in order: ``{"kind": "dense", ...}`` or ``{"kind": "normalize"}``."""
    modules: list[nn.Module] = []
    for step in steps:
        if step["kind"] == "dense":
            modules.append(Dense(step))
        elif step["kind"] == "normalize":
            modules.append(Normalize())
        else:
            raise ValueError(f"unknown step {step['kind']!r} after pooling")
    return nn.Sequential(*modules)


def exclude_prompt(mask: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The mask without the prompt's tokens: the first ``prompt_length`` tokens after any left padding."""
    mask = mask.clone()
    pad = mask.to(torch.int32).argmax(dim=1)  # left padding of each row (0 for right padding)
    if pad.sum() == 0:
        mask[:, :prompt_length] = 0
    else:
        positions = torch.arange(mask.size(1), device=mask.device).unsqueeze(0)
        mask[positions < (pad + prompt_length).unsqueeze(1)] = 0
    return mask


def _pool_one(hidden: torch.Tensor, mask: torch.Tensor, original: torch.Tensor, mode: str) -> torch.Tensor:
    """One pooling mode over float32 ``(B, L, D)`` with the ``(B, L)`` mask of the tokens pooled."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    if mode == "cls":  # the first token pooled (after left padding, or after an excluded prompt)
        first = mask.to(torch.int32).argmax(dim=1)
        return hidden.gather(1, first.view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])).squeeze(1)
    if mode == "max":
        return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    if mode in ("mean", "mean_sqrt_len_tokens"):
        count = weights.sum(dim=1).clamp(min=1e-9)
        return (hidden * weights).sum(dim=1) / (count if mode == "mean" else count.sqrt())
    if mode == "weightedmean":  # position weights 1, 2, ... from the first real token
        positions = torch.arange(1, hidden.shape[1] + 1, device=hidden.device, dtype=hidden.dtype).view(1, -1, 1)
        weighted = weights * (positions - original.to(torch.int32).argmax(dim=1).view(-1, 1, 1))
        return (hidden * weighted).sum(dim=1) / weighted.sum(dim=1).clamp(min=1e-9)
    if mode == "lasttoken":  # the last token pooled (the end of the text, with either padding side)
        length = hidden.shape[1]
        values, from_end = mask.flip(1).max(1)
        from_end = torch.where(values == 0, length - 1, from_end)
        last = (length - from_end - 1).view(-1, 1, 1).expand(-1, 1, hidden.shape[-1])
        return (hidden * weights).gather(1, last).squeeze(1)
    if mode == "gem":  # hubtune's generalised mean (p = 3)
        powered = hidden.clamp(min=1e-6).pow(GEM_P) * weights
        return (powered.sum(1) / weights.sum(1).clamp(min=1e-9)).pow(1.0 / GEM_P)
    raise ValueError(f"pooling {mode!r} does not apply to a token sequence")


def pool_text(hidden: torch.Tensor, mask: torch.Tensor | None, pool: str, prompt_length: int = 0) -> torch.Tensor:
    """``(B, L, D)`` token states -> ``(B, D)`` float32 (``(B, k*D)`` for ``k`` modes joined by ``+``);
    ``prompt_length`` > 0: that many prompt tokens are not pooled (``include_prompt: false``)."""
    if mask is None:
        mask = torch.ones(hidden.shape[:2], dtype=torch.int64, device=hidden.device)
    pooled = exclude_prompt(mask, prompt_length) if prompt_length else mask
    hidden = hidden.float()
    return torch.cat([_pool_one(hidden, pooled, mask, mode) for mode in pool.split("+")], dim=-1)


def build(meta: dict[str, Any]) -> Any:
    from transformers import AutoConfig, AutoModel

    config = dict(meta["config"])
    model = AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config))
    if meta.get("steps"):
        model.add_module(SENTENCE_HEAD, sentence_head(meta["steps"]))
    return model


def embed(model: Any, meta: dict[str, Any], inputs: Sequence[Any], pool: Callable[..., Any]) -> Any:
    if meta["modality"] == "text":  # (input_ids, attention_mask)
        mask = inputs[1] if len(inputs) > 1 else None
        hidden = model(input_ids=inputs[0], attention_mask=mask).last_hidden_state
        vectors = pool_text(hidden, mask, meta["pool"], int(meta.get("prompt_length") or 0))
        head = getattr(model, SENTENCE_HEAD, None)
        return vectors if head is None else head(vectors)
    return pool(model(pixel_values=inputs[0]).last_hidden_state, None, meta["pool"])
