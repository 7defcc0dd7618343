"""Pieces shared by the hf text and vision adapters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hubtune.backbone import LoadOptions, load_weights_into
from hubtune.hfhub import require_safetensors

if TYPE_CHECKING:
    import torch


def load_model(folder: Path, options: LoadOptions, what: str) -> tuple["torch.nn.Module", str]:
    """AutoModel from a pinned snapshot per ``--weights``; returns (model, revision suffix)."""
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # hubtune reports its own progress; keep stderr readable
    weights = options.parsed_weights
    remote = options.trust_remote_code
    if weights.kind == "default":
        require_safetensors(folder, what)
        model = AutoModel.from_pretrained(
            str(folder), use_safetensors=True, trust_remote_code=remote, dtype=torch.float32
        )
        return model, ""
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=remote)
    torch.manual_seed(weights.seed)
    model = AutoModel.from_config(config, trust_remote_code=remote, dtype=torch.float32)
    if weights.kind == "file":
        load_weights_into(model, weights, what)
    return model, "+" + weights.revision()


def hidden_state_layers(count: int) -> list[str]:
    """``last`` (the model's final output) plus every entry of ``output_hidden_states``."""
    return ["last"] + [f"hidden_states.{index}" for index in range(count)]


def hidden_state_index(layer: str) -> int | None:
    return None if layer == "last" else int(layer.rsplit(".", 1)[1])
