"""The ``timm`` source.

Weights: pretrained weights are fetched as a pinned Hub snapshot (safetensors only) and handed to
timm as a local folder, so the revision in the fingerprint is a real commit and offline mode is
honoured. Embedding: ``forward_head(forward_features(x), pre_logits=True)`` by default (timm's own
feature vector), ``features`` for the unpooled ``forward_features`` output, or any stage/block of
``feature_info`` through ``forward_intermediates``. Preprocessing comes from the weights' own
config (``resolve_model_data_config`` + ``create_transform``), never a hard-coded default.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any, Iterable

from hubtune.backbone import RANDOM_INSTEAD, Backbone, ImagePreprocessor, LoadOptions, load_weights_into, select_layer
from hubtune.errors import BackboneOptionError, ModelNotFoundError
from hubtune.hfhub import require_safetensors, snapshot
from hubtune.pooling import canonical_pool, pool_any
from hubtune.refs import HF_HUB_PREFIX, ModelRef
from hubtune.sources import ModelInfo, PullResult, Source

NATIVE_POOL = "native"
#: hubtune pooling name -> timm ``global_pool`` for the ``pre_logits`` layer
TIMM_GLOBAL_POOL = {"avg": "avg", "mean": "avg", "max": "max", "cls": "token"}


def _hub_location(ref: ModelRef) -> str:
    """The Hub repository that holds the weights of ``ref``."""
    if ref.id.startswith(HF_HUB_PREFIX):
        return ref.id[len(HF_HUB_PREFIX):]
    import timm

    if not timm.is_model(ref.id):
        raise ModelNotFoundError(f"timm has no architecture {ref.id.split('.')[0]!r}; see `hubtune models --source timm`")
    cfg = timm.models.get_pretrained_cfg(ref.id)
    if cfg is None or not getattr(cfg, "hf_hub_id", None):
        raise ModelNotFoundError(
            f"timm:{ref.id} has no pretrained weights on the Hugging Face Hub; use --weights random "
            "or --weights PATH, or pick a tag from `hubtune models 'timm:{name}.*'`"
        )
    return cfg.hf_hub_id


class TimmBackbone(Backbone):
    modality = "image"

    def __init__(self, *, intermediate_index: int | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.intermediate_index = intermediate_index

    def forward(self, batch: dict) -> Any:
        x = batch["pixel_values"]  # (B, 3, H, W)
        if self.layer == "pre_logits":
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        if self.layer == "features":
            return pool_any(self.model.forward_features(x), self.pool)
        (features,) = self.model.forward_intermediates(
            x, indices=[self.intermediate_index], intermediates_only=True, stop_early=True
        )
        return pool_any(features, self.pool)  # (B, C, H', W') -> (B, C)

    def blocks(self) -> Any:
        """ResNet-like (``conv1 .. maxpool`` + ``layer1..4``) or ViT-like (``patch_embed`` + ``blocks``)."""
        from hubtune.finetune.blocks import BlockSplit, flatten_stages, sequential_run

        model = self.model
        neck = lambda hidden, mask: model.forward_head(hidden, pre_logits=True)  # noqa: E731
        if hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "_pos_embed"):
            def stem(batch: dict) -> Any:
                x = model._pos_embed(model.patch_embed(batch["pixel_values"]))  # (B, L, D)
                return model.norm_pre(model.patch_drop(x)), None

            def vit_neck(hidden: Any, mask: Any) -> Any:
                return model.forward_head(model.norm(hidden), pre_logits=True)

            named = [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
            return BlockSplit(stem, named, sequential_run, vit_neck, [model.norm, model.fc_norm], "pre_logits")
        stages = [(f"layer{i}", getattr(model, f"layer{i}", None)) for i in range(1, 5)]
        if all(stage is not None for _, stage in stages) and hasattr(model, "conv1"):
            def resnet_stem(batch: dict) -> Any:
                return model.maxpool(model.act1(model.bn1(model.conv1(batch["pixel_values"])))), None

            return BlockSplit(resnet_stem, flatten_stages(stages), sequential_run, neck, [], "pre_logits")
        return super().blocks()


class TimmSource(Source):
    name = "timm"
    modalities = ("image",)

    def claims(self, name: str) -> bool:
        import timm

        return name.startswith(HF_HUB_PREFIX) or timm.is_model(name)

    def list_models(self, pattern: str | None = None) -> Iterable[ModelInfo]:
        import timm

        for name in timm.list_pretrained():
            if pattern is None or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(f"timm:{name}", pattern):
                yield ModelInfo(ref=f"timm:{name}", source=self.name, modality="image")

    def _snapshot(self, ref: ModelRef, options: LoadOptions, weights: bool) -> tuple[Path, str]:
        patterns = ("*.json", "*.safetensors") if weights else ("*.json",)
        folder, commit = snapshot(_hub_location(ref), ref.revision, offline=options.offline, allow_patterns=patterns,
                                  asked=str(ref), instead=RANDOM_INSTEAD)
        if weights:
            require_safetensors(folder, f"timm:{ref.id}")
        return folder, commit

    def pull(self, ref: ModelRef, options: LoadOptions) -> PullResult:
        folder, commit = self._snapshot(ref, options, weights=True)
        return PullResult(ref=f"timm:{ref.id}@{commit}", revision=commit, path=str(folder))

    def _create(self, ref: ModelRef, options: LoadOptions) -> tuple[Any, str]:
        import timm
        import torch

        weights = options.parsed_weights
        if weights.kind == "default":
            folder, commit = self._snapshot(ref, options, weights=True)
            return timm.create_model(f"local-dir:{folder}", pretrained=True), commit
        if ref.revision:
            raise BackboneOptionError(f"timm:{ref.id}: a @revision pins pretrained weights; drop it with --weights {options.weights}")
        torch.manual_seed(weights.seed)
        if ref.id.startswith(HF_HUB_PREFIX):
            folder, _ = self._snapshot(ref, options, weights=False)
            model = timm.create_model(f"local-dir:{folder}", pretrained=False)
        else:
            model = timm.create_model(ref.id, pretrained=False)
        if weights.kind == "file":
            load_weights_into(model, weights, f"timm:{ref.id}")
        return model, weights.revision()

    def load(self, ref: ModelRef, options: LoadOptions) -> Backbone:
        import torch
        from timm.data import create_transform, resolve_model_data_config

        model, revision = self._create(ref, options)
        model.eval()
        stages = [info["module"] for info in getattr(model, "feature_info", [])]
        layers = ["pre_logits", "features"] + stages
        layer = select_layer(options.layer, layers, "pre_logits", f"timm:{ref.id}")
        data_config = resolve_model_data_config(model)
        transform = create_transform(**data_config, is_training=False)
        index = stages.index(layer) if layer in stages else None
        if layer == "pre_logits":
            pool = NATIVE_POOL
            if options.pool is not None:
                if options.pool not in TIMM_GLOBAL_POOL:
                    raise BackboneOptionError(
                        f"layer pre_logits pools with timm's own global pool (avg, max or cls); for "
                        f"--pool {options.pool} choose --layer features"
                    )
                try:
                    model.reset_classifier(0, global_pool=TIMM_GLOBAL_POOL[options.pool])
                except Exception as exc:
                    raise BackboneOptionError(f"timm:{ref.id} cannot pool with {options.pool!r}: {exc}") from exc
                pool = "avg" if options.pool == "mean" else options.pool
        else:
            size = data_config["input_size"]
            with torch.inference_mode():
                probe = torch.zeros(1, *size)
                output = (
                    model.forward_features(probe)
                    if index is None
                    else model.forward_intermediates(probe, indices=[index], intermediates_only=True)[0]
                )
            default = "cls" if output.ndim == 3 and getattr(model, "num_prefix_tokens", 0) else ("mean" if output.ndim == 3 else "avg")
            pool = canonical_pool(options.pool or default, output.ndim)
        config = json.loads(json.dumps(data_config, default=str))
        config["transform"] = "timm.data.create_transform(is_training=False)"
        return TimmBackbone(
            ref=ModelRef(self.name, ref.id, None if revision.startswith(("random", "file")) else revision),
            revision=revision,
            model=model,
            preprocessor=ImagePreprocessor(transform),
            preprocess_config=config,
            layers=layers,
            layer=layer,
            pool=pool,
            options=options,
            intermediate_index=index,
        )
