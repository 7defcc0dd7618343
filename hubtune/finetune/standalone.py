"""Load a model written by ``hubtune export-model`` with plain torch: no hubtune needed.

This file is self-contained on purpose (``export-model`` copies it beside the checkpoint as
``hubtune_loader.py``): it needs torch, safetensors and the model's own library. The network is
rebuilt either by the source's own small rebuild module (copied beside it too, named in the
metadata as ``loader_module``: ``build(meta)`` and ``embed(model, meta, inputs, pool)``) from the
``backbone.*`` tensors, or, for sources without one, from a ``torch.export`` program file
(``program``), checked to hold no pickled payloads before it is loaded.

    from hubtune_loader import load
    model, meta = load("model.safetensors")
    logits = model(pixel_values)                       # image models: (B, 3, H, W), preprocessed as meta["preprocess"]
    logits = model(input_ids, attention_mask)          # text models: token ids from the repo's tokenizer
    meta["classes"][int(logits.argmax(1)[0])]

The checkpoint holds ``head.*`` and, with a rebuild module, ``backbone.*`` (the whole network,
fine-tuned blocks included); its metadata ``hubtune`` (JSON) says how to build each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn


def pool(output: torch.Tensor, mask: torch.Tensor | None, how: str) -> torch.Tensor:
    """A token sequence ``(B, L, D)`` or feature map ``(B, C, H, W)`` -> ``(B, D)``, as hubtune pools it."""
    if output.ndim == 4:
        return output.mean((2, 3)) if how == "avg" else output.amax((2, 3))
    if output.ndim != 3:
        return output
    if how == "cls":
        return output[:, 0]
    weights = (torch.ones(output.shape[:2], device=output.device) if mask is None else mask).unsqueeze(-1).to(output.dtype)
    if how == "mean":
        return (output * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    if how == "max":
        return output.masked_fill(weights == 0, -1e9).max(1).values
    raise ValueError(f"pooling {how!r} is not supported by this loader")


class ProgramBackbone(nn.Module):
    """A ``torch.export`` program of the backbone's forward (``library: torch.export``)."""

    def __init__(self, program: Any, inputs: list[str]):
        super().__init__()
        self.program, self.inputs = program, inputs

    def train(self, mode: bool = True) -> "ProgramBackbone":
        self.training = mode  # an exported program has no train mode: its graph is the eval-mode forward
        return self

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.program(dict(zip(self.inputs, inputs)))


def _check_program(path: Path) -> None:
    """Refuse a program archive that would unpickle anything (``torch.export.load`` would)."""
    import io
    import zipfile

    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            if name.endswith(("weights_config.json", "constants_config.json")):
                config = json.loads(archive.read(name))
                if any(entry.get("use_pickle") for entry in config.get("config", {}).values()):
                    raise ValueError(f"{path}: {name} holds pickled payloads; refusing to load it")
            elif name.endswith(".pt"):
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)  # tensors only, or it raises


def _library(meta: dict[str, Any], folder: Path) -> Any:
    """The source's own rebuild module, copied beside this loader by ``export-model``."""
    import importlib.util

    path = folder / meta["loader_module"]
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

    def __init__(self, meta: dict[str, Any], backbone: nn.Module, head: nn.Module, library: Any = None):
        super().__init__()
        self.meta, self.backbone, self.head, self.library = meta, backbone, head, library

    def embed(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.library is None:
            return self.backbone(*inputs)
        return self.library.embed(self.backbone, self.meta, inputs, pool)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(*inputs))


def load(path: str, device: str = "cpu") -> tuple[ExportedModel, dict[str, Any]]:
    """The exported network in eval mode, and its metadata (classes, preprocessing, origin)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    checkpoint = Path(path)
    with safe_open(str(checkpoint), framework="pt") as handle:
        meta = json.loads(handle.metadata()["hubtune"])
    tensors = load_file(str(checkpoint), device=device)
    library = None
    if meta["library"] == "torch.export":
        program_path = checkpoint.parent / meta["program"]
        _check_program(program_path)
        backbone: nn.Module = ProgramBackbone(torch.export.load(str(program_path)).module(), meta["inputs"])
    else:
        library = _library(meta, checkpoint.parent)
        backbone = library.build(meta)
        backbone.load_state_dict({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
    head = build_head(meta["head"], meta["dim"], len(meta["classes"]))
    head.load_state_dict({k[len("head."):]: v for k, v in tensors.items() if k.startswith("head.")})
    return ExportedModel(meta, backbone, head, library).to(device).eval(), meta
