"""Rebuild a transformers network without hubtune (copied beside an ``export-model`` checkpoint).

Self-contained: needs torch and transformers. ``build(meta)`` makes the model from its recorded
config; ``embed`` pools ``last_hidden_state`` as hubtune does (and L2-normalises where the
sentence-transformers pipeline did).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence


def build(meta: dict[str, Any]) -> Any:
    from transformers import AutoConfig, AutoModel

    config = dict(meta["config"])
    return AutoModel.from_config(AutoConfig.for_model(config.pop("model_type"), **config))


def embed(model: Any, meta: dict[str, Any], inputs: Sequence[Any], pool: Callable[..., Any]) -> Any:
    import torch.nn.functional as F

    if meta["modality"] == "text":  # (input_ids, attention_mask)
        mask = inputs[1] if len(inputs) > 1 else None
        vectors = pool(model(input_ids=inputs[0], attention_mask=mask).last_hidden_state, mask, meta["pool"])
        return F.normalize(vectors.float(), dim=-1) if meta.get("normalize") else vectors
    return pool(model(pixel_values=inputs[0]).last_hidden_state, None, meta["pool"])
