"""The ``torchvision`` source.

``torchvision:NAME[@WEIGHTS]``, e.g. ``torchvision:resnet50@IMAGENET1K_V2``; the revision is the
weights enum member (``DEFAULT`` when omitted, recorded under its real name). Checkpoints are
loaded with ``weights_only=True`` and their published hash checked (torchvision ships no
safetensors). Preprocessing is ``weights.transforms()``. The default embedding is the penultimate
layer (the input of the final ``Linear``, which is replaced by ``Identity``); any module can be
chosen by name, its output captured by a forward hook that stops the forward pass there.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from pathlib import Path
from typing import Any, Iterable

from hubtune.plugin import (
    POOLED, RANDOM_INSTEAD, Backbone, BackboneOptionError, ImagePreprocessor, LayerPools, LoadOptions, ModelInfo,
    ModelNotFoundError, ModelRef, OfflineError, PullResult, Source, UnsafeModelError, load_weights_into, pool_any,
    pools_for_rank,
)

PENULTIMATE = "penultimate"
LOADER = Path(__file__).with_name("standalone.py")


class _LayerReached(Exception):
    """Raised by the capture hook to stop the forward pass at the chosen layer."""


class LayerCapture:
    """The output of one module, captured by a forward hook that stops the pass right there.

    One hook, registered once; each thread keeps its own capture, so the extractor's concurrent
    forwards (``--streams``) never see each other's outputs (a hook added per call did: rows of one
    batch were paired with another's).
    """

    def __init__(self, model: Any, layer: str):
        self.model = model
        self.local = threading.local()
        self.handle = model.get_submodule(layer).register_forward_hook(self._hook)

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        self.local.output = output
        raise _LayerReached

    def __call__(self, x: Any) -> Any:
        self.local.output = None
        try:
            self.model(x)
        except _LayerReached:
            pass
        return self.local.output


def classification_models() -> list[str]:
    import torchvision.models as models

    return models.list_models(module=models)


def _weights_member(name: str, revision: str | None) -> Any:
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    wanted = revision or "DEFAULT"
    try:
        return enum[wanted]
    except KeyError:
        names = ", ".join(member.name for member in enum)
        raise ModelNotFoundError(f"torchvision:{name} has no weights {wanted!r}; available: {names}, DEFAULT") from None


def _checkpoint_path(url: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name


def _fetch_checkpoint(url: str, offline: bool, asked: str) -> Path:
    """The local checkpoint file, downloading it (hash-checked) unless offline."""
    import torch

    path = _checkpoint_path(url)
    if not path.is_file():
        if offline:
            raise OfflineError(f"{path.name} is not in the torch hub cache ({path.parent}) and offline mode is on; "
                               f"fetch it once with network (`hubtune pull {asked}`) or unset HF_HUB_OFFLINE"
                               f"{RANDOM_INSTEAD}")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=torch.hub.HASH_REGEX.search(path.name).group(1))
    return path


def _load_state(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)``; a file it refuses (damaged, or a planted pickle) is a clear
    error rather than a traceback, and never a reason to unpickle fully."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UnsafeModelError(
            f"{what}: the cached checkpoint {path} is not a plain weights file ({reason[:120]}); "
            "delete it and fetch it again with `hubtune pull`"
        ) from exc


def _replace_last_linear(model: Any) -> int | None:
    """Swap the final ``Linear`` for ``Identity``; return its input width, or None if there is none."""
    import torch.nn as nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = (name, module)
    if last is None:
        return None
    name, module = last
    model.set_submodule(name, nn.Identity())
    return module.in_features


def _module_layers(model: Any) -> list[str]:
    """Named modules up to two levels deep: ``layer4``, ``layer4.1``, ``features.3``, ..."""
    return [name for name, _ in model.named_modules() if name and name.count(".") <= 1]


def _preprocess_config(transforms: Any) -> dict:
    public = {key: value for key, value in vars(transforms).items() if not key.startswith("_") and key != "training"}
    public["transform"] = type(transforms).__name__
    return json.loads(json.dumps(public, default=str, sort_keys=True))


class TorchvisionBackbone(Backbone):
    modality = "image"

    def __init__(self, *, crop_size: list[int], **kwargs: Any):
        super().__init__(**kwargs)
        self.crop_size = crop_size
        self.capture: LayerCapture | None = None

    def pools(self, layer: str) -> LayerPools:
        if layer == PENULTIMATE:
            return POOLED  # the model's own pooling, before the final Linear
        import torch

        height, width = (list(self.crop_size) * 2)[:2]  # torchvision stores [224] or [h, w]
        probe = LayerCapture(self.model, layer)
        try:
            with torch.inference_mode():
                ndim = probe(torch.zeros(1, 3, height, width, device=self.device)).ndim
        finally:
            probe.handle.remove()
        pools = pools_for_rank(ndim)
        return pools.with_default("cls") if ndim == 3 else pools

    def configure(self, layer: str, pool: str) -> None:
        if layer == PENULTIMATE:
            if _replace_last_linear(self.model) is None:
                raise BackboneOptionError(f"{self.ref} has no final Linear layer; choose a --layer from "
                                          f"{', '.join(self.layers[1:])}")
        else:
            self.capture = LayerCapture(self.model, layer)

    def export_recipe(self) -> dict[str, Any]:
        if self.layer != PENULTIMATE:
            return super().export_recipe()
        return {"library": "torchvision", "loader": str(LOADER), "architecture": self.ref.id}

    def forward(self, batch: dict) -> Any:
        x = batch["pixel_values"]  # (B, 3, H, W)
        if self.capture is None:
            return self.model(x)  # the final Linear is Identity: (B, D)
        return pool_any(self.capture(x), self.pool)

    def blocks(self) -> Any:
        """ResNet family: ``conv1 .. maxpool`` -> the residual blocks of ``layer1..4`` -> avgpool."""
        from hubtune.plugin import BlockSplit, flatten_stages, sequential_run

        model = self.model
        stages = [(f"layer{i}", getattr(model, f"layer{i}", None)) for i in range(1, 5)]
        if not all(stage is not None for _, stage in stages) or not hasattr(model, "avgpool"):
            return super().blocks()

        def stem(batch: dict) -> Any:
            return model.maxpool(model.relu(model.bn1(model.conv1(batch["pixel_values"])))), None

        def neck(hidden: Any, mask: Any) -> Any:
            return model.fc(model.avgpool(hidden).flatten(1))  # fc is Identity at the penultimate layer

        return BlockSplit(stem, flatten_stages(stages), sequential_run, neck, [], PENULTIMATE)


class TorchvisionSource(Source):
    name = "torchvision"
    modalities = ("image",)

    def claims(self, name: str) -> bool:
        return name in classification_models()

    def modality(self, ref: ModelRef) -> str | None:
        return "image"  # every model of this source embeds images

    def list_models(self, pattern: str | None = None) -> Iterable[ModelInfo]:
        from torchvision.models import get_model_weights

        for name in classification_models():
            if pattern is None or fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(f"torchvision:{name}", pattern):
                for member in get_model_weights(name):
                    yield ModelInfo(ref=f"torchvision:{name}@{member.name}", source=self.name, modality="image")

    def _check_name(self, ref: ModelRef) -> None:
        if ref.id not in classification_models():
            raise ModelNotFoundError(f"torchvision has no classification model {ref.id!r}; see `hubtune models --source torchvision`")

    def pull(self, ref: ModelRef, options: LoadOptions) -> PullResult:
        self._check_name(ref)
        member = _weights_member(ref.id, ref.revision)
        path = _fetch_checkpoint(member.url, options.offline, f"torchvision:{ref.id}@{member.name}")
        return PullResult(ref=f"torchvision:{ref.id}@{member.name}", revision=member.name, path=str(path))

    def load(self, ref: ModelRef, options: LoadOptions) -> Backbone:
        import torch
        from torchvision.models import get_model

        self._check_name(ref)
        weights = options.parsed_weights
        if weights.kind == "default":
            member = _weights_member(ref.id, ref.revision)
            kwargs: dict[str, Any] = {"num_classes": len(member.meta["categories"])}
            if ref.id.startswith("vit_"):
                kwargs["image_size"] = member.meta["min_size"][0]
            model = get_model(ref.id, weights=None, **kwargs)
            what = f"torchvision:{ref.id}@{member.name}"
            state = _load_state(_fetch_checkpoint(member.url, options.offline, what), what)
            model.load_state_dict(state)
            revision = member.name
        else:
            if ref.revision:
                raise BackboneOptionError(f"torchvision:{ref.id}: @{ref.revision} names pretrained weights; drop it with --weights {options.weights}")
            member = _weights_member(ref.id, None)  # preprocessing still comes from the weights' family
            torch.manual_seed(weights.seed)
            model = get_model(ref.id, weights=None)
            if weights.kind == "file":
                load_weights_into(model, weights, f"torchvision:{ref.id}")
            revision = None
        model.eval()
        transforms = member.transforms()
        return TorchvisionBackbone(
            ref=ModelRef(self.name, ref.id, revision),
            revision=revision,
            model=model,
            preprocessor=ImagePreprocessor(transforms),
            preprocess_config=_preprocess_config(transforms),
            layers=[PENULTIMATE] + _module_layers(model),
            options=options,
            crop_size=list(transforms.crop_size),
        )
