"""hf text-image models: CLIP, SigLIP, SigLIP 2 and any ``*Model`` with ``get_image_features`` and
``get_text_features``. One reference, two towers into one space.

A repository is two-tower when its ``config.json`` has both a ``text_config`` and a ``vision_config``
and it ships a tokenizer and an image processor (``preprocessor_config.json``, or a transformers 5
``processor_config.json``); its ``AutoModel`` must then have both feature methods. The backbone
embeds with the tower ``LoadOptions.tower`` asks for (the extractor asks for the data's kind; none:
the image tower), and :meth:`TowerBackbone.tower_backbone` builds the other tower on the same loaded
model, so ``search`` embeds a text query over images and the zero-shot head embeds class prompts.

Layers: ``embeds`` (the default, pool ``native``) is what the model's own ``get_image_features`` /
``get_text_features`` returns: the projected embedding, not normalised (cosine search and the
zero-shot head normalise). ``hidden_states.N`` are the chosen tower's hidden states, pooled by hubtune
(image: every token, SigLIP 2 only its real patches; text: the real tokens).

Inputs are prepared as the model's processor prepares them: images through the repository's
processor (its class's own ``images_kwargs`` included, as ``processor(images=...)`` does); texts
through its tokenizer with the processor's text defaults (SigLIP 2: ``padding="max_length"``,
``max_length=64``). SigLIP's processor declares none, but its text tower pools the *last position*, so
a text's vector depends on its padding: it is padded to ``max_length`` (64) as the model card and the
zero-shot pipeline do. SigLIP and SigLIP 2 were trained without a text attention mask (big_vision,
open_clip: padding is attended), so none is passed to their text tower (transformers 4's
``SiglipTokenizer`` returned none; transformers 5's does). CLIP pools the first EOS token under a
causal mask, so right padding to a batch's longest text leaves every vector as it is alone; a family
not listed here is probed once for that, and padded to ``max_length`` when padding changes its vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hubtune.plugin import (
    POOLED, TEXT_TOKENS, TOKENS, Backbone, BackboneOptionError, ImagePreprocessor, LayerPools,
    LoadOptions, ModelNotFoundError, ModelRef, Preprocessor, pool_tokens,
)
from hubtune_hf.common import encoder_run, load_model
from hubtune_hf.templates import TEMPLATE_SETS
from hubtune_hf.text import TokenizerPreprocessor

#: what ``hubtune models`` lists as the modality of a two-tower repository
TWO_TOWERS = "image+text"
#: the projected embedding, the model's own ``get_*_features`` output
EMBEDS = "embeds"
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model", "vocab.txt")
#: per ``model_type``: the zero-shot template set its authors publish (``templates.TEMPLATE_SETS``)
FAMILY_TEMPLATES = {"clip": "openai-imagenet", "siglip": "siglip", "siglip2": "siglip"}
#: per ``model_type``, where the processor declares no text defaults: how texts are padded, and
#: whether the text tower is given the attention mask (``None``: probe whether padding matters)
FAMILY_TEXT = {"clip": ("longest", True), "siglip": ("max_length", False), "siglip2": ("max_length", False)}


def is_two_tower(folder: Path) -> bool:
    """Whether a snapshot is a text-image model (see the module doc); reads JSON only."""
    config = folder / "config.json"
    if not config.is_file():
        return False
    data = json.loads(config.read_text())
    return (isinstance(data.get("text_config"), dict) and isinstance(data.get("vision_config"), dict)
            and any((folder / name).is_file() for name in IMAGE_PROCESSOR_FILES)
            and any((folder / name).is_file() for name in TOKENIZER_FILES))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def features(output: Any) -> Any:
    """A feature method's result as ``(B, D)``: transformers 5 returns an output whose
    ``pooler_output`` is the projected embedding, older versions the tensor itself."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise BackboneOptionError(f"{type(output).__name__} has no pooler_output: not a projected embedding")
    return pooled


class ProcessorImages:
    """PIL image -> every tensor the repository's processor returns for it (picklable)."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, image: Any) -> dict:
        return {key: value[0] for key, value in self.processor(images=image, return_tensors="pt").items()}


class ImageInputs(ImagePreprocessor):
    """Decoded RGB -> the processor's tensors (``pixel_values``; SigLIP 2 adds its patch mask and shapes)."""

    def __call__(self, item: Any) -> dict:
        whole: Any = super().__call__(item)["pixel_values"]  # the transform returned the whole dict
        return whole


class TextInputs(TokenizerPreprocessor):
    """One text -> token ids with the processor's text defaults; padded on the tokenizer's side."""

    def __init__(self, tokenizer: Any, max_length: int, padding: str):
        super().__init__(tokenizer, max_length, tokenizer.padding_side, tokenizer.truncation_side,
                         pad_to_max_length=padding == "max_length")


class Parts:
    """What both towers of one loaded model share: the model, its processors and its family's choices."""

    def __init__(self, *, ref: ModelRef, model: Any, family: str, image_inputs: ImageInputs, image_config: dict,
                 text_inputs: TextInputs, text_config: dict, text_mask: bool):
        self.ref, self.model, self.family = ref, model, family
        self.image_inputs, self.image_config = image_inputs, image_config
        self.text_inputs, self.text_config, self.text_mask = text_inputs, text_config, text_mask

    def layers(self, tower: str) -> list[str]:
        config = self.model.config.vision_config if tower == "image" else self.model.config.text_config
        return [EMBEDS] + [f"hidden_states.{i}" for i in range(int(config.num_hidden_layers) + 1)]

    def build(self, tower: str, options: LoadOptions) -> "TowerBackbone":
        cls = ImageTower if tower == "image" else TextTower
        inputs: Preprocessor = self.image_inputs if tower == "image" else self.text_inputs
        return cls(parts=self, ref=self.ref, revision=self.ref.revision, model=self.model, preprocessor=inputs,
                   preprocess_config=self.image_config if tower == "image" else self.text_config,
                   layers=self.layers(tower), options=options)


class TowerBackbone(Backbone):
    """One tower of a text-image model; ``tower_backbone`` gives the other on the same weights."""

    def __init__(self, *, parts: Parts, **kwargs: Any):
        super().__init__(**kwargs)
        self.parts = parts
        self.tower = self.modality  # a fingerprint field: the two towers' vectors are never mixed up
        self.hidden_index: int | None = None
        self.other: TowerBackbone | None = None
        self._exact: bool | None = None  # whether the image tower's block split reproduces forward

    def pools(self, layer: str) -> LayerPools:
        if layer == EMBEDS:
            return POOLED
        return TOKENS if self.modality == "image" else TEXT_TOKENS

    def configure(self, layer: str, pool: str) -> None:
        self.hidden_index = None if layer == EMBEDS else int(layer.rsplit(".", 1)[1])

    def tower_backbone(self, tower: str) -> Backbone:
        """The other tower, at ``embeds`` with this one's ``--dim``, precision, device and weights."""
        if tower == self.modality:
            return self
        if tower not in ("image", "text"):
            raise self.tower_error(tower)
        if self.layer != EMBEDS:
            raise BackboneOptionError(f"{self.ref}: the {tower} tower shares a space only with --layer {EMBEDS} "
                                      f"vectors; these are --layer {self.layer}")
        other = self.other
        if other is None or other.truncate_dim != self.truncate_dim:
            from dataclasses import replace

            options = replace(self.options, tower=tower, layer=None, pool=None, prompt=None, prompt_text=None,
                              dim=self.truncate_dim, precision=self.precision, device=str(self.device))
            other = self.parts.build(tower, options)
            other.choose(options)
            other.other, self.other = self, other
        return other

    def zeroshot_templates(self) -> list[str]:
        return list(TEMPLATE_SETS.get(FAMILY_TEMPLATES.get(self.parts.family, ""), ()))

    def zeroshot_scoring(self) -> tuple[str, float, float]:
        """CLIP: ``softmax(exp(logit_scale) * cos)``; SigLIP (a ``logit_bias``): ``sigmoid(... + logit_bias)``;
        ALIGN-like models (a ``temperature``): ``softmax(cos / temperature)``."""
        model = self.parts.model
        bias = getattr(model, "logit_bias", None)
        if getattr(model, "logit_scale", None) is not None:
            scale = float(model.logit_scale.detach().float().exp().reshape(-1)[0])
        elif getattr(model, "temperature", None) is not None:
            scale = 1.0 / float(model.temperature.detach().float().reshape(-1)[0])
        else:
            raise BackboneOptionError(f"{self.ref}: the model has neither logit_scale nor temperature to score with")
        if bias is None:
            return "softmax", scale, 0.0
        return "sigmoid", scale, float(bias.detach().float().reshape(-1)[0])

    def _pool(self, hidden: Any, mask: Any) -> Any:
        return pool_tokens(hidden, mask, self.pool or "mean")


class ImageTower(TowerBackbone):
    modality = "image"

    def forward(self, batch: dict) -> Any:
        model: Any = self.model
        if self.hidden_index is None:
            return features(model.get_image_features(**batch))
        output = model.get_image_features(**batch, output_hidden_states=True)
        return self._pool(output.hidden_states[self.hidden_index], batch.get("pixel_attention_mask"))


    def blocks(self) -> Any:
        """CLIP-like (``embeddings -> pre_layrnorm -> layers -> post_layernorm(CLS) -> visual_projection``)
        and SigLIP-like (``embeddings -> layers -> post_layernorm -> head``) vision towers, at ``embeds``;
        checked once on a probe against ``forward`` (SigLIP 2's patch masks are not split: refused)."""
        from hubtune.plugin import BlockSplit

        vision = getattr(self.model, "vision_model", None)
        layers = getattr(getattr(vision, "encoder", None), "layers", None)
        if self.layer != EMBEDS or vision is None or layers is None or not hasattr(vision, "embeddings"):
            return super().blocks()
        pre, post = getattr(vision, "pre_layrnorm", None), getattr(vision, "post_layernorm", None)
        if post is None:
            return super().blocks()
        head = getattr(vision, "head", None) if getattr(vision, "use_head", True) else None
        projection = getattr(self.model, "visual_projection", None)

        def stem(batch: dict) -> Any:
            hidden = vision.embeddings(batch["pixel_values"])
            return (hidden if pre is None else pre(hidden)), None

        def neck(hidden: Any, mask: Any) -> Any:
            pooled = post(hidden[:, 0]) if head is None else head(post(hidden))
            return pooled if projection is None else projection(pooled)

        split = BlockSplit(stem, [(f"vision_model.encoder.layers.{i}", layer) for i, layer in enumerate(layers)],
                           encoder_run(vision), neck, [m for m in (post, head, projection) if m is not None], EMBEDS)
        if self._exact is None:
            self._exact = self._reproduces(split)
        return split if self._exact else super().blocks()

    def _reproduces(self, split: Any) -> bool:
        import torch

        batch = self.to_device(self.preprocessor.collate([self.preprocessor(self.probe_item())] * 2))
        if set(batch) != {"pixel_values"}:
            return False
        try:
            with torch.no_grad():
                expected, got = self.forward(batch).float(), split.full(batch).float()
        except Exception:  # a layer that needs more than (hidden, mask): the split does not fit this family
            return False
        return got.shape == expected.shape and bool((got - expected).norm() <= 1e-4 * expected.norm() + 1e-6)


class TextTower(TowerBackbone):
    modality = "text"

    def probe_item(self) -> str:
        return "a photo"

    def forward(self, batch: dict) -> Any:
        inputs = batch if self.parts.text_mask else {k: v for k, v in batch.items() if k != "attention_mask"}
        model: Any = self.model
        if self.hidden_index is None:
            return features(model.get_text_features(**inputs))
        output = model.get_text_features(**inputs, output_hidden_states=True)
        return self._pool(output.hidden_states[self.hidden_index], batch.get("attention_mask"))


def _processors(folder: Path, options: LoadOptions) -> tuple[Any, Any, dict]:
    """(image processor callable, tokenizer, the processor class's text defaults)."""
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    remote = options.trust_remote_code
    try:
        processor = AutoProcessor.from_pretrained(str(folder), trust_remote_code=remote)
    except Exception:  # no processor class for this family: its two parts, as the repository has them
        processor = None
    if processor is None or not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
        return (AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=remote),
                AutoTokenizer.from_pretrained(str(folder), trust_remote_code=remote), {})
    return processor, processor.tokenizer, dict(getattr(type(processor), "text_kwargs", None) or {})


def _padding_matters(model: Any, tokenizer: Any) -> bool:
    """Whether padding a text changes its vector (a tower that pools the last position, not an EOS)."""
    import torch

    encoded = tokenizer(["a photo"], return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded.get("attention_mask", torch.ones_like(encoded["input_ids"]))
    pad = torch.full((1, 3), tokenizer.pad_token_id or 0, dtype=ids.dtype)
    padded = (torch.cat([pad, ids], 1), torch.cat([torch.zeros_like(pad), mask], 1)) if tokenizer.padding_side == "left" \
        else (torch.cat([ids, pad], 1), torch.cat([mask, torch.zeros_like(pad)], 1))
    with torch.no_grad():
        alone = features(model.get_text_features(input_ids=ids, attention_mask=mask))
        longer = features(model.get_text_features(input_ids=padded[0], attention_mask=padded[1]))
    return not torch.allclose(alone, longer, rtol=1e-4, atol=1e-5)


def build_two_tower_backbone(ref: ModelRef, folder: Path, options: LoadOptions) -> Backbone:
    """The ``options.tower`` tower (default: image) of a text-image repository."""
    model: Any = load_model(folder, options, f"hf:{ref.id}")
    family = str(getattr(model.config, "model_type", ""))
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise ModelNotFoundError(
            f"hf:{ref.id} is a {family or type(model).__name__} model with text and vision parts but no "
            "get_image_features/get_text_features pair; hubtune embeds text-image models (CLIP, SigLIP) and "
            "single-tower text or image models"
        )
    processor, tokenizer, text_defaults = _processors(folder, options)
    limits = [getattr(model.config.text_config, "max_position_embeddings", None), tokenizer.model_max_length,
              text_defaults.get("max_length")]
    max_length = min(int(limit) for limit in limits if limit and limit < 1_000_000)
    padding, mask = FAMILY_TEXT.get(family, (None, True))
    if text_defaults.get("padding") in ("max_length", "longest", True):
        padding = "max_length" if text_defaults["padding"] == "max_length" else "longest"
    if padding is None:
        padding = "max_length" if _padding_matters(model, tokenizer) else "longest"
    image_processor = getattr(processor, "image_processor", processor)
    image_config = {"processor": _jsonable(image_processor.to_dict()),
                    "processor_defaults": _jsonable(getattr(type(processor), "images_kwargs", None) or {})}
    text_config = {"tokenizer": type(tokenizer).__name__, "max_length": max_length, "padding": padding,
                   "padding_side": tokenizer.padding_side, "attention_mask": mask}
    parts = Parts(ref=ref, model=model, family=family, image_inputs=ImageInputs(ProcessorImages(processor)),
                  image_config=image_config, text_inputs=TextInputs(tokenizer, max_length, padding),
                  text_config=text_config, text_mask=mask)
    return parts.build(options.tower or "image", options)
