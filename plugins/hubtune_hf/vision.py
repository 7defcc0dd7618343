"""hf vision backbones: AutoImageProcessor + AutoModel (ViT-like token models and conv nets).

The default embedding (layer ``last``) is what the model itself returns as its image vector:

- ``native``: ``image_embeds`` of a ``*WithProjection`` vision model, else ``pooler_output``
  flattened to ``(B, D)``, whenever that output is a parameter-free pooling or a final norm: ConvNeXt
  (``layernorm`` of the mean of the last feature map), ResNet and EfficientNet (global average
  pooling), Swin (mean of the normed tokens), BEiT (norm of the mean of the patch tokens).
- ``cls`` where ``pooler_output`` *is* the first token of ``last_hidden_state`` (DINOv2, DINOv2 with
  registers, DINOv3 ViT and ConvNeXt: the final-layernormed CLS token); ``native`` is offered too.
- ``cls`` for models whose pooler is a trained projection head (ViT, DeiT: dense + tanh, trained
  for no embedding objective and often missing from the checkpoint, so randomly initialised): the
  layernormed CLS token of ``last_hidden_state``, as these models are used for features; ``native``
  is not offered there.

Other pools apply to the tokens or feature map of ``last_hidden_state`` as it is (ConvNeXt's
``--pool avg`` is the mean of the map *before* its final layernorm, as before). Token models with a
CLS token also offer ``cls+mean`` on ``last``: DINOv2's linear-evaluation input (``create_linear_input``
with one block and ``avgpool``), the CLS token concatenated with the mean of the *patch* tokens only
(CLS, distillation and register tokens excluded), both as ``last_hidden_state`` holds them, i.e. after
the final layernorm in DINOv2, DINOv3 and ViT; ``(B, 2 * D)``. ``mean`` stays the mean of every token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubtune.hfhub import require_safetensors
from hubtune.plugin import (
    NATIVE, Backbone, ImagePreprocessor, LayerPools, LoadOptions, ModelRef, load_weights_into,
    pool_any, pools_for_rank,
)
from hubtune_hf.common import (
    encoder_blocks, encoder_run, export_recipe, hidden_state_index, hidden_state_layers, load_model,
)

#: the CLS token and the mean of the patch tokens, concatenated (DINOv2's linear protocol)
CLS_MEAN = "cls+mean"
#: the pools the standalone transformers loader rebuilds, per rank of ``last_hidden_state``
STANDALONE_POOLS = {3: ("cls", "mean", "max"), 4: ("avg", "max")}


class ProcessorTransform:
    """PIL image -> (3, H, W) tensor through the repository's own image processor (picklable)."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image: Any) -> Any:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def native_output(outputs: Any) -> Any:
    """The model's own image vector: ``image_embeds`` when it has one, else ``pooler_output``, as (B, D)."""
    embeds = getattr(outputs, "image_embeds", None)
    return (embeds if embeds is not None else outputs.pooler_output).flatten(1)


def cls_mean(tokens: Any, prefix: int) -> Any:
    """(B, L, D) -> (B, 2D): the first token, then the mean of the tokens after the ``prefix`` ones."""
    import torch

    return torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], dim=-1)


class HFVisionBackbone(Backbone):
    modality = "image"

    def __init__(self, *, ranks: dict[str, int], native: bool = False, first_pooled: bool = False,
                 prefix: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.ranks = ranks  # layer -> rank of its output (3: tokens, 4: a feature map)
        self.native = native  # whether the model's own pooled output is the embedding (see the module doc)
        self.first_pooled = first_pooled  # whether that output is the first token of last_hidden_state
        self.prefix = prefix  # tokens before the patches (CLS, distillation, registers); None: no CLS token
        self.hidden_index: int | None = None
        self._exact: dict[str, bool] = {}  # pool of layer last -> whether the block split reproduces it

    def pools(self, layer: str) -> LayerPools:
        rank = self.ranks[layer]
        pools = pools_for_rank(rank)
        if rank == 3:
            pools = pools.with_default("cls") if self.prefix is not None else pools  # no CLS (Swin): mean
        if layer != "last" or rank not in (3, 4):
            return pools
        extra = (CLS_MEAN,) if rank == 3 and self.prefix is not None else ()
        if not self.native:
            return LayerPools(pools.names + extra, pools.default, pools.aliases)
        default = "cls" if self.first_pooled else NATIVE  # the same vector; the name a cache already has
        return LayerPools((NATIVE, *pools.names, *extra), default, pools.aliases)

    def configure(self, layer: str, pool: str) -> None:
        self.hidden_index = hidden_state_index(layer)

    def export_recipe(self) -> dict[str, Any]:
        if self.layer == "last" and self.pool in STANDALONE_POOLS.get(self.ranks["last"], ()):
            return export_recipe(self.model, self.pool, False)
        return super().export_recipe()  # native / cls+mean / gem / none: a torch.export program of forward

    def forward(self, batch: dict) -> Any:
        pixel_values = batch["pixel_values"]
        if self.hidden_index is not None:
            hidden = self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[self.hidden_index]
            return pool_any(hidden, self._pool())
        return self._embed_last(pixel_values, self._pool())

    def _pool(self) -> str:
        assert self.pool is not None, "select() sets the pool before the first forward"
        return self.pool

    def _last_pool(self) -> str:
        """The pool of layer ``last`` a block split ends with: the chosen one, or ``last``'s default."""
        return self._pool() if self.layer == "last" else self.pools("last").default

    def _embed_last(self, pixel_values: Any, pool: str) -> Any:
        outputs = self.model(pixel_values=pixel_values)
        if pool == NATIVE:
            return native_output(outputs)
        if pool == CLS_MEAN:
            return cls_mean(outputs.last_hidden_state, self.prefix or 1)
        return pool_any(outputs.last_hidden_state, pool)

    def blocks(self) -> Any:
        """``stem -> blocks -> neck`` for ViT-like models (``embeddings`` -> transformer layers -> final
        layernorm -> pooling: ViT, DeiT, DINOv2), ConvNeXt, ResNet and EfficientNet (stem -> residual
        blocks -> final norm or top conv -> the model's pooling). Checked once on a probe image against
        ``forward``; a family the split does not reproduce exactly (Swin, BEiT, DINOv3's rotary ViT,
        projection models) cannot be partially fine-tuned."""
        pool = self._last_pool()
        split = self._token_split(pool) if self.ranks["last"] == 3 else self._conv_split(pool)
        if split is not None and pool not in self._exact:
            self._exact[pool] = self._reproduces(split, pool)
        return split if split is not None and self._exact[pool] else super().blocks()

    def _neck_pool(self, tokens: Any, pool: str) -> Any:
        if pool == NATIVE:
            return tokens[:, 0]  # only offered here when the model's pooled output is its first token
        if pool == CLS_MEAN:
            return cls_mean(tokens, self.prefix or 1)
        return pool_any(tokens, pool)

    def _token_split(self, pool: str) -> Any:
        from hubtune.plugin import BlockSplit

        model: Any = self.model
        named = encoder_blocks(model)
        norm: Any = getattr(model, "layernorm", None)
        if named is None or norm is None or not hasattr(model, "embeddings"):
            return None
        if pool == NATIVE and not self.first_pooled:
            return None

        def stem(batch: dict) -> Any:
            return model.embeddings(batch["pixel_values"]), None  # (B, L, D)

        return BlockSplit(stem, named, encoder_run(model), lambda hidden, mask: self._neck_pool(norm(hidden), pool),
                          [norm], "last")

    def _conv_split(self, pool: str) -> Any:
        """ConvNeXt (stages of downsampling + layers, then ``layernorm`` of the mean), ResNet (stages of
        layers, then ``pooler``) and EfficientNet (blocks, then the top conv, then ``pooler``)."""
        import torch.nn as nn

        from hubtune.plugin import BlockSplit, pool_map, sequential_run

        model: Any = self.model
        stem_module = getattr(model, "embeddings", None)
        stem_module = getattr(model, "embedder", None) if stem_module is None else stem_module
        encoder = getattr(model, "encoder", None)
        if stem_module is None or encoder is None:
            return None
        named: list[tuple[str, nn.Module]] = []
        neck_modules: list[nn.Module] = []
        top: Any = None
        if hasattr(encoder, "stages"):
            for i, stage in enumerate(encoder.stages):
                down = getattr(stage, "downsampling_layer", None)
                if down is not None and any(True for _ in down.parameters()):
                    named.append((f"encoder.stages.{i}.downsampling_layer", nn.Sequential(*down)))
                named += [(f"encoder.stages.{i}.layers.{j}", layer) for j, layer in enumerate(stage.layers)]
        elif hasattr(encoder, "blocks") and hasattr(encoder, "top_conv"):
            named = [(f"encoder.blocks.{i}", block) for i, block in enumerate(encoder.blocks)]
            neck_modules = [encoder.top_conv, encoder.top_bn]
            top = nn.Sequential(encoder.top_conv, encoder.top_bn, encoder.top_activation)
        else:
            return None
        norm: Any = getattr(model, "layernorm", None)
        if norm is not None and pool == NATIVE:
            neck_modules.append(norm)

        def neck(hidden: Any, mask: Any) -> Any:
            hidden = top(hidden) if top is not None else hidden
            if pool != NATIVE:
                return pool_map(hidden, pool)
            if norm is not None:  # ConvNeXt
                return norm(hidden.mean([-2, -1]))
            return model.pooler(hidden).flatten(1)

        return BlockSplit(lambda batch: (stem_module(batch["pixel_values"]), None), named, sequential_run, neck,
                          neck_modules, "last")

    def _reproduces(self, split: Any, pool: str) -> bool:
        """Whether ``split`` gives layer ``last``'s vectors with ``pool`` on a probe image (fp32, no autocast)."""
        import torch

        batch = self.to_device(self.preprocessor.collate([self.preprocessor(self.probe_item())] * 2))
        try:
            with torch.no_grad():
                expected = self._embed_last(batch["pixel_values"], pool).float()
                got = split.full(batch).float()
        except Exception:  # a layer that needs more than (hidden, mask): the split does not fit this family
            return False
        return got.shape == expected.shape and bool((got - expected).norm() <= 1e-4 * expected.norm() + 1e-6)


def _jsonable(config: dict) -> dict:
    return json.loads(json.dumps(config, default=str, sort_keys=True))


def _projection_class(folder: Path) -> Any:
    """The ``*VisionModelWithProjection`` class a repository declares (AutoModel would drop its projection)."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    if "auto_map" in config:
        return None
    names = [name for name in config.get("architectures") or [] if name.endswith("VisionModelWithProjection")]
    return getattr(transformers, names[0], None) if names else None


def load_vision_model(folder: Path, options: LoadOptions, what: str) -> Any:
    """AutoModel (``common.load_model``), or the repository's projection vision model class."""
    import torch

    cls = _projection_class(folder)
    if cls is None:
        return load_model(folder, options, what)
    weights = options.parsed_weights
    if weights.kind == "default":
        require_safetensors(folder, what)
        return cls.from_pretrained(str(folder), use_safetensors=True, dtype=torch.float32)
    torch.manual_seed(weights.seed)
    model = cls(cls.config_class.from_pretrained(str(folder)))
    if weights.kind == "file":
        load_weights_into(model, weights, what)
    return model


def _prefix(model: Any, first_pooled: bool) -> int | None:
    """Tokens before the patch tokens: CLS (+ DeiT's distillation token) + register tokens; None: no CLS."""
    embeddings = getattr(model, "embeddings", None)
    if not first_pooled and not hasattr(embeddings, "cls_token"):
        return None
    registers = getattr(model.config, "num_register_tokens", 0) or 0
    return 1 + int(hasattr(embeddings, "distillation_token")) + registers


def _projection_pooler(model: Any) -> bool:
    """Whether the model's ``pooler`` is a trained projection (ViT's dense + tanh), not a pooling or a norm."""
    import torch.nn as nn

    pooler = getattr(model, "pooler", None)
    return isinstance(pooler, nn.Module) and any(isinstance(m, nn.Linear) for m in pooler.modules())


def build_vision_backbone(ref: ModelRef, folder: Path, options: LoadOptions) -> HFVisionBackbone:
    import torch
    from PIL import Image
    from transformers import AutoImageProcessor

    model = load_vision_model(folder, options, f"hf:{ref.id}")
    processor = AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=options.trust_remote_code)
    transform = ProcessorTransform(processor)
    # One probe tells the number of hidden states, each one's shape (tokens or feature map) and what
    # the model's own pooled output is.
    probe = transform(Image.new("RGB", (64, 64), (127, 127, 127)))[None]
    with torch.inference_mode():
        outputs = model.eval()(pixel_values=probe, output_hidden_states=True)
    layers = hidden_state_layers(len(outputs.hidden_states))
    ranks = {layer: (outputs.last_hidden_state if hidden_state_index(layer) is None
                     else outputs.hidden_states[hidden_state_index(layer)]).ndim for layer in layers}
    pooled = getattr(outputs, "image_embeds", None)
    native = pooled is not None or (getattr(outputs, "pooler_output", None) is not None and not _projection_pooler(model))
    pooled = native_output(outputs) if native else None
    last = outputs.last_hidden_state
    first_pooled = bool(pooled is not None and getattr(outputs, "image_embeds", None) is None and last.ndim == 3
                        and pooled.shape == last[:, 0].shape and torch.equal(pooled, last[:, 0]))
    prefix = _prefix(model, first_pooled) if last.ndim == 3 else None
    if prefix is not None and last.shape[1] <= prefix:
        prefix = None
    return HFVisionBackbone(
        ref=ref,
        revision=ref.revision,
        model=model,
        preprocessor=ImagePreprocessor(transform),
        preprocess_config=_jsonable(processor.to_dict()),
        layers=layers,
        options=options,
        ranks=ranks,
        native=native,
        first_pooled=first_pooled,
        prefix=prefix,
    )
