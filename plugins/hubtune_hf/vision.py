"""hf vision backbones: AutoImageProcessor + AutoModel (ViT-like token models and conv nets)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubtune.plugin import Backbone, ImagePreprocessor, LayerPools, LoadOptions, ModelRef, pool_any, pools_for_rank
from hubtune_hf.common import (
    encoder_blocks, encoder_run, export_recipe, hidden_state_index, hidden_state_layers, load_model,
)


class ProcessorTransform:
    """PIL image -> (3, H, W) tensor through the repository's own image processor (picklable)."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image: Any) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


class HFVisionBackbone(Backbone):
    modality = "image"

    def __init__(self, *, ranks: dict[str, int], **kwargs: Any):
        super().__init__(**kwargs)
        self.ranks = ranks  # layer -> rank of its output (3: tokens, 4: a feature map)
        self.hidden_index: int | None = None

    def pools(self, layer: str) -> LayerPools:
        pools = pools_for_rank(self.ranks[layer])
        return pools.with_default("cls") if self.ranks[layer] == 3 else pools  # ViT-like: the CLS token

    def configure(self, layer: str, pool: str) -> None:
        self.hidden_index = hidden_state_index(layer)

    def export_recipe(self) -> dict[str, Any]:
        return export_recipe(self.model, self.pool, False) if self.layer == "last" else super().export_recipe()

    def _select(self, pixel_values: Any, all_hidden: bool) -> Any:
        outputs = self.model(pixel_values=pixel_values, output_hidden_states=all_hidden)
        return outputs.last_hidden_state if not all_hidden else outputs.hidden_states

    def forward(self, batch: dict) -> Any:
        if self.hidden_index is None:
            hidden = self._select(batch["pixel_values"], False)
        else:
            hidden = self._select(batch["pixel_values"], True)[self.hidden_index]
        return pool_any(hidden, self.pool)

    def blocks(self) -> Any:
        """ViT-like models: ``embeddings`` -> the transformer layers -> final layer norm -> pooling."""
        from hubtune.plugin import BlockSplit

        model = self.model
        named = encoder_blocks(model)
        norm = getattr(model, "layernorm", None)
        if named is None or norm is None or not hasattr(model, "embeddings"):
            return super().blocks()

        def stem(batch: dict) -> Any:
            return model.embeddings(batch["pixel_values"]), None  # (B, L, D)

        def neck(hidden: Any, mask: Any) -> Any:
            return pool_any(norm(hidden), self.pool)

        return BlockSplit(stem, named, encoder_run(model), neck, [norm], "last")


def _jsonable(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str, sort_keys=True))


def build_vision_backbone(ref: ModelRef, folder: Path, options: LoadOptions) -> HFVisionBackbone:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    model = load_model(folder, options, f"hf:{ref.id}")
    processor = AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=options.trust_remote_code)
    transform = ProcessorTransform(processor)
    # One probe tells the number of hidden states and each one's shape (tokens or feature map).
    probe = transform(Image.new("RGB", (64, 64), (127, 127, 127)))[None]
    with torch.inference_mode():
        outputs = model.eval()(pixel_values=probe, output_hidden_states=True)
    layers = hidden_state_layers(len(outputs.hidden_states))
    ranks = {layer: (outputs.last_hidden_state if hidden_state_index(layer) is None
                     else outputs.hidden_states[hidden_state_index(layer)]).ndim for layer in layers}
    return HFVisionBackbone(
        ref=ref,
        revision=ref.revision,
        model=model,
        preprocessor=ImagePreprocessor(transform),
        preprocess_config=_jsonable(processor.to_dict()),
        layers=layers,
        options=options,
        ranks=ranks,
    )
