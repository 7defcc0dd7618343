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

from hubtune.hfhub import require_safetensors, snapshot
from hubtune.plugin import (
    NATIVE, RANDOM_INSTEAD, Backbone, BackboneOptionError, ImagePreprocessor, LayerPools, LoadOptions,
    ModelInfo, ModelNotFoundError, ModelRef, PullResult, Source, load_weights_into, pool_any, pools_for_rank,
)
from hubtune.refs import HF_HUB_PREFIX

PRE_LOGITS = "pre_logits"
#: hubtune pooling name -> timm ``global_pool`` for the ``pre_logits`` layer
TIMM_GLOBAL_POOL = {"avg": "avg", "max": "max", "cls": "token"}
LOADER = Path(__file__).with_name("standalone.py")


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

    def __init__(self, *, stages: list[str], input_size: tuple[int, ...], **kwargs: Any):
        super().__init__(**kwargs)
        self.stages = stages
        self.input_size = input_size

    def _unpooled(self, x: Any, layer: str) -> Any:
        """The output of ``features`` or a ``feature_info`` stage, before pooling."""
        if layer == "features":
            return self.model.forward_features(x)
        (features,) = self.model.forward_intermediates(
            x, indices=[self.stages.index(layer)], intermediates_only=True, stop_early=True
        )
        return features

    def pools(self, layer: str) -> LayerPools:
        if layer == PRE_LOGITS:  # timm's own global pool: native, or rebuilt as avg / max / cls
            names = (NATIVE, "avg", "max") + (("cls",) if getattr(self.model, "num_prefix_tokens", 0) else ())
            return LayerPools(names, NATIVE, {"mean": "avg"})
        import torch

        with torch.inference_mode():
            output = self._unpooled(torch.zeros(1, *self.input_size, device=self.device), layer)
        pools = pools_for_rank(output.ndim)
        return pools.with_default("cls") if output.ndim == 3 and getattr(self.model, "num_prefix_tokens", 0) else pools

    def configure(self, layer: str, pool: str) -> None:
        if layer == PRE_LOGITS and pool != NATIVE:
            try:
                self.model.reset_classifier(0, global_pool=TIMM_GLOBAL_POOL[pool])
            except Exception as exc:
                raise BackboneOptionError(f"{self.ref} cannot pool with {pool!r}: {exc}") from exc

    def export_recipe(self) -> dict[str, Any]:
        if self.layer != PRE_LOGITS:
            return super().export_recipe()
        pool = getattr(self.model, "global_pool", None)
        pool = getattr(pool, "pool_type", pool)
        return {"library": "timm", "loader": str(LOADER), "architecture": self.model.pretrained_cfg["architecture"],
                "num_classes": self.model.num_classes, "global_pool": pool if isinstance(pool, str) else None}

    def forward(self, batch: dict) -> Any:
        x = batch["pixel_values"]  # (B, 3, H, W)
        if self.layer == PRE_LOGITS:
            return self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return pool_any(self._unpooled(x, self.layer), self.pool)  # (B, C, H', W') -> (B, C)

    def blocks(self) -> Any:
        """ResNet-like (``conv1 .. maxpool`` + ``layer1..4``) or ViT-like (``patch_embed`` + ``blocks``)."""
        from hubtune.plugin import BlockSplit, flatten_stages, sequential_run

        model = self.model
        neck = lambda hidden, mask: model.forward_head(hidden, pre_logits=True)  # noqa: E731
        if hasattr(model, "patch_embed") and hasattr(model, "blocks") and hasattr(model, "_pos_embed"):
            def stem(batch: dict) -> Any:
                x = model._pos_embed(model.patch_embed(batch["pixel_values"]))  # (B, L, D)
                return model.norm_pre(model.patch_drop(x)), None

            def vit_neck(hidden: Any, mask: Any) -> Any:
                return model.forward_head(model.norm(hidden), pre_logits=True)

            named = [(f"blocks.{i}", block) for i, block in enumerate(model.blocks)]
            return BlockSplit(stem, named, sequential_run, vit_neck, [model.norm, model.fc_norm], PRE_LOGITS)
        stages = [(f"layer{i}", getattr(model, f"layer{i}", None)) for i in range(1, 5)]
        if all(stage is not None for _, stage in stages) and hasattr(model, "conv1"):
            def resnet_stem(batch: dict) -> Any:
                return model.maxpool(model.act1(model.bn1(model.conv1(batch["pixel_values"])))), None

            return BlockSplit(resnet_stem, flatten_stages(stages), sequential_run, neck, [], PRE_LOGITS)
        return super().blocks()


class TimmSource(Source):
    name = "timm"
    modalities = ("image",)

    def claims(self, name: str) -> bool:
        import timm

        return name.startswith(HF_HUB_PREFIX) or timm.is_model(name)

    def modality(self, ref: ModelRef) -> str | None:
        return "image"  # every model of this source embeds images

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

    def _create(self, ref: ModelRef, options: LoadOptions) -> tuple[Any, str | None]:
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
        return model, None

    def load(self, ref: ModelRef, options: LoadOptions) -> Backbone:
        from timm.data import create_transform, resolve_model_data_config

        model, revision = self._create(ref, options)
        model.eval()
        stages = [info["module"] for info in getattr(model, "feature_info", [])]
        data_config = resolve_model_data_config(model)
        config = json.loads(json.dumps(data_config, default=str))
        config["transform"] = "timm.data.create_transform(is_training=False)"
        return TimmBackbone(
            ref=ModelRef(self.name, ref.id, revision),
            revision=revision,
            model=model,
            preprocessor=ImagePreprocessor(create_transform(**data_config, is_training=False)),
            preprocess_config=config,
            layers=[PRE_LOGITS, "features", *stages],
            options=options,
            stages=stages,
            input_size=tuple(data_config["input_size"]),
        )
