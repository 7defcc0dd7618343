"""Load a model written by ``hubtune export-model`` with plain torch: no hubtune needed.

This file is self-contained on purpose (``export-model`` copies it beside the checkpoint as
``hubtune_loader.py``): it needs torch, safetensors and the model's own library (timm,
torchvision or transformers), and rebuilds the network from the checkpoint's metadata.

    from hubtune_loader import load
    model, meta = load("model.safetensors")
    logits = model(pixel_values)                       # image models: (B, 3, H, W), preprocessed as meta["preprocess"]
    logits = model(input_ids, attention_mask)          # text models: token ids from the repo's tokenizer
    meta["classes"][int(logits.argmax(1)[0])]

The checkpoint holds ``backbone.*`` (the whole network, fine-tuned blocks included) and ``head.*``;
its metadata ``hubtune`` (JSON) says how to build each: library, architecture, pooling, head.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


def _replace_last_linear(model: nn.Module) -> None:
    last = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)][-1]
    model.set_submodule(last, nn.Identity())


def _pool_tokens(hidden: torch.Tensor, mask: torch.Tensor | None, pool: str) -> torch.Tensor:
    if pool == "cls":
        return hidden[:, 0]
    weights = (torch.ones(hidden.shape[:2], device=hidden.device) if mask is None else mask).unsqueeze(-1).to(hidden.dtype)
    if pool == "mean":
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if pool == "max":
        return hidden.masked_fill(weights == 0, -1e9).max(1).values
    raise ValueError(f"pooling {pool!r} is not supported by this loader")


def _pool(output: torch.Tensor, mask: torch.Tensor | None, pool: str) -> torch.Tensor:
    if output.ndim == 3:
        return _pool_tokens(output, mask, pool)
    if output.ndim == 4:
        return output.mean((2, 3)) if pool == "avg" else output.amax((2, 3))
    return output


def _backbone(meta: dict[str, Any]) -> nn.Module:
    library = meta["library"]
    if library == "timm":
        import timm

        kwargs = {"global_pool": meta["global_pool"]} if meta.get("global_pool") is not None else {}
        return timm.create_model(meta["architecture"], pretrained=False, num_classes=meta["num_classes"], **kwargs)
    if library == "torchvision":
        from torchvision.models import get_model

        model = get_model(meta["architecture"], weights=None, **meta.get("kwargs", {}))
        _replace_last_linear(model)
        return model
    if library == "transformers":
        from transformers import AutoConfig, AutoModel

        config = dict(meta["config"])
        return AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config))
    raise ValueError(f"unknown library {library!r} in the checkpoint metadata")


def build_head(spec: dict[str, Any], dim: int, classes: int) -> nn.Module:
    """``{"kind": "linear"}`` or ``{"kind": "mlp", "hidden": [h1, ...], "dropout": p}`` -> the head module."""
    if spec["kind"] == "linear":
        return nn.Linear(dim, classes)
    layers: list[nn.Module] = []
    width = dim
    for size in spec["hidden"]:
        layers += [nn.Linear(width, size), nn.GELU(), nn.Dropout(spec["dropout"])]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, classes))


class ExportedModel(nn.Module):
    """Backbone embedding (as hubtune computes it) -> head logits."""

    def __init__(self, meta: dict[str, Any], backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.meta, self.backbone, self.head = meta, backbone, head

    def embed(self, *inputs: torch.Tensor) -> torch.Tensor:
        meta, model = self.meta, self.backbone
        if meta["library"] == "timm":
            return model.forward_head(model.forward_features(inputs[0]), pre_logits=True)
        if meta["library"] == "torchvision":
            return model(inputs[0])
        if meta["modality"] == "text":
            input_ids, mask = inputs[0], inputs[1] if len(inputs) > 1 else None
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            vectors = _pool(hidden, mask, meta["pool"])
            return F.normalize(vectors.float(), dim=-1) if meta.get("normalize") else vectors
        return _pool(model(pixel_values=inputs[0]).last_hidden_state, None, meta["pool"])

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(*inputs))


def load(path: str, device: str = "cpu") -> tuple[ExportedModel, dict[str, Any]]:
    """The exported network in eval mode, and its metadata (classes, preprocessing, origin)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(path, framework="pt") as handle:
        meta = json.loads(handle.metadata()["hubtune"])
    tensors = load_file(path, device=device)
    backbone = _backbone(meta)
    backbone.load_state_dict({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
    head = build_head(meta["head"], meta["dim"], len(meta["classes"]))
    head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
    return ExportedModel(meta, backbone, head).to(device).eval(), meta
