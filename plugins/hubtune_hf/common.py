"""Pieces shared by the hf text and vision adapters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from hubtune.plugin import LoadOptions, load_weights_into
from hubtune.hfhub import require_safetensors

if TYPE_CHECKING:
    import torch

LOADER = Path(__file__).with_name("standalone.py")


def load_model(folder: Path, options: LoadOptions, what: str) -> "torch.nn.Module":
    """AutoModel from a pinned snapshot per ``--weights`` (random and file weights use its config)."""
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
        return model
    config = AutoConfig.from_pretrained(str(folder), trust_remote_code=remote)
    torch.manual_seed(weights.seed)
    model = AutoModel.from_config(config, trust_remote_code=remote, dtype=torch.float32)
    if weights.kind == "file":
        load_weights_into(model, weights, what)
    return model


def hidden_state_layers(count: int) -> list[str]:
    """``last`` (the model's final output) plus every entry of ``output_hidden_states``."""
    return ["last"] + [f"hidden_states.{index}" for index in range(count)]


def export_recipe(model: "torch.nn.Module", pool: str, normalize: bool) -> dict[str, Any]:
    """How the standalone loader rebuilds an hf model (its config, then the state dict)."""
    return {"library": "transformers", "loader": str(LOADER), "config": model.config.to_dict(), "pool": pool,
            "normalize": normalize}


def hidden_state_index(layer: str) -> int | None:
    return None if layer == "last" else int(layer.rsplit(".", 1)[1])


def encoder_blocks(model: "torch.nn.Module") -> list[tuple[str, "torch.nn.Module"]] | None:
    """The transformer layers of an encoder (``encoder.layer`` in BERT, ``layers`` in ViT), named."""
    for path in ("encoder.layer", "encoder.layers", "layers"):
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            continue
        return [(f"{path}.{i}", layer) for i, layer in enumerate(layers)]
    return None


def encoder_run(model: "torch.nn.Module") -> Callable[..., Any]:
    """Run transformer layers on ``(B, L, D)`` with the ``(B, L)`` token mask turned into the
    attention mask the model's own forward builds (``create_bidirectional_mask``)."""
    from transformers.masking_utils import create_bidirectional_mask

    def run(modules: Any, hidden: "torch.Tensor", mask: "torch.Tensor | None") -> "torch.Tensor":
        if not modules:
            return hidden
        attention = None if mask is None else create_bidirectional_mask(
            config=model.config, inputs_embeds=hidden, attention_mask=mask)
        for module in modules:
            hidden = module(hidden, attention)
        return hidden

    return run
