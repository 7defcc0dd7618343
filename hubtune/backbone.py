"""The one interface every model source adapts to.

A :class:`Backbone` is a frozen network plus the preprocessing its weights expect. It splits the
work the way the extractor needs it:

- ``preprocessor(item)`` turns one raw input (text, or image bytes) into tensors. It holds no model
  and is picklable, so DataLoader workers run it.
- ``preprocessor.collate(samples)`` makes a batch (stacking images, padding tokens).
- ``forward(batch)`` runs the network on the device and returns ``(B, dim)``.

``embed_batch`` wraps ``forward`` with device transfer, ``inference_mode`` and autocast; ``embed``
does the whole thing for a list of inputs. The fingerprint names the exact function.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Sequence, cast

from hubtune.errors import BackboneOptionError, InputError
from hubtune.fingerprint import STORE_FORMAT_VERSION, compute_fingerprint, hash_file
from hubtune.imageio import to_rgb_image

if TYPE_CHECKING:
    import numpy as np
    import torch

    from hubtune.blocks import BlockSplit
    from hubtune.pooling import LayerPools
    from hubtune.refs import ModelRef

STORED_DTYPES = ("float16", "float32")


#: the way out an offline error offers for sources whose architectures build without a download
RANDOM_INSTEAD = "; or, to test without pretrained weights, --weights random (a seeded init, no download)"


@dataclass(frozen=True)
class Weights:
    """``--weights``: ``default`` (pretrained), ``random[:SEED]`` or a safetensors file."""

    kind: str  # "default" | "random" | "file"
    seed: int = 0
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> "Weights":
        if text == "default":
            return cls("default")
        if text == "random" or text.startswith("random:"):
            seed_text = text.partition(":")[2] or "0"
            if not seed_text.isdigit():
                raise BackboneOptionError(f"--weights {text!r}: the seed after 'random:' must be a whole number")
            return cls("random", seed=int(seed_text))
        path = Path(text).expanduser()
        if path.suffix != ".safetensors":
            raise BackboneOptionError(
                f"--weights {text!r}: expected 'default', 'random[:SEED]' or a .safetensors file "
                "(pickled checkpoints are not loaded; convert with safetensors.torch.save_file)"
            )
        if not path.is_file():
            raise BackboneOptionError(f"--weights {text!r}: no such file")
        return cls("file", path=path.resolve())

    def identity(self) -> str:
        """The fingerprint's ``weights`` field: ``default``, ``random:SEED`` or ``file-sha256:HEX``."""
        if self.kind == "random":
            return f"random:{self.seed}"
        if self.kind == "file" and self.path is not None:
            return f"file-sha256:{hash_file(self.path, hashlib.sha256()).hexdigest()}"
        return "default"

    def load_state_dict(self) -> dict:
        """The tensors of a ``file`` weights choice (safetensors: no code can run)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(self.path), device="cpu")
        except SafetensorError as exc:
            raise BackboneOptionError(f"--weights {self.path}: not a readable safetensors file ({exc})") from exc


@dataclass
class LoadOptions:
    """Options every source honours when building a backbone (the CLI's shared options)."""

    layer: str | None = None
    pool: str | None = None
    precision: str = "auto"
    device: str = "auto"
    weights: str = "default"
    offline: bool = False
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def parsed_weights(self) -> Weights:
        return Weights.parse(self.weights)


def load_weights_into(model: "torch.nn.Module", weights: Weights, what: str) -> None:
    """Load a safetensors state dict into ``model``, strictly, with a readable error."""
    state = weights.load_state_dict()
    expected = model.state_dict()
    wrong = [f"{name} {tuple(tensor.shape)} (the model's: {tuple(expected[name].shape)})"
             for name, tensor in state.items() if name in expected and expected[name].shape != tensor.shape]
    if wrong:
        raise BackboneOptionError(f"--weights {weights.path}: does not fit {what}: {len(wrong)} tensors have another "
                                  f"shape, e.g. {'; '.join(wrong[:3])}; is it a checkpoint of another architecture?")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BackboneOptionError(
            f"--weights {weights.path}: does not fit {what}: "
            f"missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]} "
            "(first five of each)"
        )


def _has_conv2d(model: "torch.nn.Module") -> bool:
    import torch.nn as nn

    return any(isinstance(module, nn.Conv2d) for module in model.modules())


def _channels_last() -> "torch.memory_format":
    import torch

    return torch.channels_last


class Preprocessor(ABC):
    """Raw input -> tensors, without the model (picklable, runs in DataLoader workers)."""

    @abstractmethod
    def __call__(self, item: Any) -> dict[str, "torch.Tensor"]: ...

    def prepare_many(self, items: Sequence[Any]) -> list[dict[str, "torch.Tensor"] | InputError]:
        """Many items at once (a sample, or the item's :class:`InputError`, per item).

        Preprocessors with a fast batched path (tokenisers) override this; the extractor uses it
        when it preprocesses in-process.
        """
        results: list[dict[str, "torch.Tensor"] | InputError] = []
        for item in items:
            try:
                results.append(self(item))
            except InputError as exc:
                results.append(exc)
            except Exception as exc:  # one odd input must not stop a run: it is recorded instead
                results.append(InputError(f"preprocessing failed: {type(exc).__name__}: {exc}"))
        return results

    def length(self, sample: dict[str, "torch.Tensor"]) -> int | None:
        """The cost of a sample when batches are formed by length (tokens), or None if uniform."""
        return None

    def collate(self, samples: Sequence[dict[str, "torch.Tensor"]]) -> dict[str, "torch.Tensor"]:
        import torch

        return {key: torch.stack([sample[key] for sample in samples]) for key in samples[0]}


class ImagePreprocessor(Preprocessor):
    """Decode to RGB, then apply the weights' own transform (PIL image -> (3, H, W) tensor)."""

    def __init__(self, transform: Any):
        self.transform = transform

    def __call__(self, item: Any) -> dict[str, "torch.Tensor"]:
        return {"pixel_values": self.transform(to_rgb_image(item))}


class Backbone(ABC):
    """A frozen network with its preprocessing, layer, pooling, device and precision fixed.

    A source *declares*: the layers (``layers``, ``default_layer``), the pools each layer accepts
    (:meth:`pools`), and how to set the network up for a choice (:meth:`configure`). The core
    *validates and records*: :meth:`select` checks ``--layer`` and ``--pool`` against the
    declaration and stores the canonical names, so a recorded choice always passes again.
    """

    modality: ClassVar[str] = "image"

    def __init__(
        self,
        *,
        ref: "ModelRef",
        revision: str | None,
        model: "torch.nn.Module",
        preprocessor: Preprocessor,
        preprocess_config: dict[str, Any],
        layers: Sequence[str],
        options: LoadOptions,
        default_layer: str | None = None,
    ):
        from hubtune.runtime import resolve_device, resolve_precision

        if not layers:
            raise BackboneOptionError(f"{ref}: the backbone declares no layers")
        self.ref = ref
        self.revision = revision
        self.weights = options.parsed_weights.identity()
        self.preprocessor = preprocessor
        self.preprocess_config = preprocess_config
        self.layers = list(layers)
        self.default_layer = default_layer or self.layers[0]
        self.layer: str | None = None  # set by select(), with the pools that layer declared
        self.pool: str | None = None
        self.layer_pools: LayerPools | None = None
        self.options = options
        self.device = resolve_device(options.device)
        self.precision = resolve_precision(options.precision, self.device)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.channels_last = self.modality == "image" and _has_conv2d(self.model)
        if self.channels_last:  # NHWC is the fast layout for convolutions on CPUs and GPUs alike
            self.model = self.model.to(memory_format=_channels_last())
        self._dim: int | None = None

    # -- what a source implements -----------------------------------------------------------------
    @abstractmethod
    def forward(self, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """Run the network on a collated batch already on ``self.device``; return ``(B, dim)``."""

    @abstractmethod
    def pools(self, layer: str) -> "LayerPools":
        """The pools ``layer`` accepts and its default (``hubtune.pooling.TOKENS``, ``FEATURE_MAP``,
        ``POOLED`` or ``pools_for_rank(ndim)``); ``layer`` is one of ``self.layers``."""

    def configure(self, layer: str, pool: str) -> None:
        """Set the network up for a validated ``layer`` and canonical ``pool`` (called once, by
        :meth:`select`). The default does nothing; sources that rebuild a pooling head override it."""

    def export_recipe(self) -> dict[str, Any]:
        """How ``export-model`` rebuilds this network without hubtune (JSON metadata).

        The default, ``{"library": "torch.export"}``, makes ``export-model`` save a ``torch.export``
        program of :meth:`forward` (works for any source). A source whose network its own library
        can rebuild from a state dict returns ``{"library": ..., "loader": FILE, ...}``, where FILE
        is a self-contained module beside the source that defines ``build(meta)`` and
        ``embed(model, meta, inputs, pool)``; ``export-model`` copies it beside the checkpoint.
        """
        return {"library": "torch.export"}

    def blocks(self) -> "BlockSplit":
        """The network as ``stem -> blocks[0..n-1] -> neck`` (what ``finetune --unfreeze N`` splits).

        Sources that support partial fine-tuning override this; the default says it is not there.
        """
        raise BackboneOptionError(
            f"{self.ref}: the {self.ref.source} source does not split this model into blocks, so it cannot be "
            "partially fine-tuned; train a head on its frozen vectors instead (`hubtune train`)"
        )

    def probe_item(self) -> Any:
        """A tiny valid input, used to measure ``dim``."""
        from PIL import Image

        return Image.new("RGB", (64, 64), (127, 127, 127))

    # -- provided by the core ---------------------------------------------------------------------
    def select(self, layer: str | None = None, pool: str | None = None) -> "Backbone":
        """Validate ``--layer`` / ``--pool`` against what this backbone declares, then configure it."""
        chosen = self.default_layer if layer is None else layer
        if chosen not in self.layers:
            raise BackboneOptionError(f"{self.ref} has no layer {chosen!r}; valid layers: {', '.join(self.layers)}")
        declared = self.pools(chosen)  # asked once: a source may probe the network to answer
        canonical = declared.canonical(pool, chosen, str(self.ref))
        self.configure(chosen, canonical)
        self.layer, self.pool, self.layer_pools, self._dim = chosen, canonical, declared, None
        return self

    def load_options(self) -> LoadOptions:
        """The options that rebuild exactly this backbone (what a head records): canonical layer and
        pool, resolved precision."""
        from dataclasses import replace

        return replace(self.options, layer=self.layer, pool=self.pool, precision=self.precision)

    def to_device(self, batch: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
        """Move a collated batch to the device (channels-last images for conv nets)."""
        import torch

        batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
        if self.channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if v.ndim == 4 else v for k, v in batch.items()}
        return batch

    def forward_on_device(self, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """``forward`` under inference mode and autocast at this backbone's precision (no transfers)."""
        import torch

        with torch.inference_mode(), self.autocast():
            return self.forward(batch)

    def autocast(self) -> Any:
        """The autocast context at this backbone's precision (extraction and fine-tuning share it)."""
        import torch

        from hubtune.runtime import torch_dtype

        return torch.autocast(device_type=self.device.type, dtype=torch_dtype(self.precision),
                              enabled=self.precision != "fp32")

    def embed_batch(self, batch: dict[str, "torch.Tensor"]) -> "torch.Tensor":
        """Collated batch -> float32 ``(B, dim)`` on the CPU, under inference mode and autocast."""
        return self.forward_on_device(self.to_device(batch)).float().cpu()

    def compile(self) -> None:
        """``torch.compile`` the network (slow first batch, faster after; worth it on long runs)."""
        import torch

        self.model = cast("torch.nn.Module", torch.compile(self.model))

    def embed(self, items: Sequence[Any], batch_size: int = 32) -> "np.ndarray":
        """Embed raw inputs (texts, image bytes or PIL images) -> float32 ``(N, dim)``.

        Preprocesses one batch at a time, so many images never sit in memory as tensors at once.
        """
        import numpy as np

        parts = [self.embed_samples([self.preprocessor(item) for item in items[start : start + batch_size]], batch_size)
                 for start in range(0, len(items), batch_size)]
        return np.concatenate(parts) if parts else self.embed_samples([])

    def embed_samples(self, samples: Sequence[dict[str, "torch.Tensor"]], batch_size: int = 32) -> "np.ndarray":
        """Embed preprocessed samples -> float32 ``(N, dim)``, ``batch_size`` at a time."""
        import numpy as np

        chunks = [self.embed_batch(self.preprocessor.collate(samples[start : start + batch_size])).numpy()
                  for start in range(0, len(samples), batch_size)]
        return np.concatenate(chunks) if chunks else np.zeros((0, self.dim), dtype=np.float32)

    @property
    def dim(self) -> int:
        """Embedding width, measured once on a probe input (exact for every layer and pooling)."""
        if self._dim is None:
            sample = self.preprocessor(self.probe_item())
            self._dim = int(self.embed_batch(self.preprocessor.collate([sample])).shape[1])
        return self._dim

    def fingerprint_fields(self, stored_dtype: str = "float16") -> dict[str, Any]:
        if self.layer is None or self.pool is None:
            raise BackboneOptionError(f"{self.ref}: no layer chosen yet (call select(), as load_backbone does)")
        if stored_dtype not in STORED_DTYPES:
            raise BackboneOptionError(f"stored dtype {stored_dtype!r}; expected one of {STORED_DTYPES}")
        return {
            "source": self.ref.source,
            "model": self.ref.id,
            "revision": self.revision,
            "weights": self.weights,
            "layer": self.layer,
            "pool": self.pool,
            "preprocess": self.preprocess_config,
            "precision": self.precision,
            "stored_dtype": stored_dtype,
            "format": STORE_FORMAT_VERSION,
        }

    def fingerprint(self, stored_dtype: str = "float16") -> str:
        return compute_fingerprint(self.fingerprint_fields(stored_dtype))

    def block_names(self) -> list[str]:
        """The names of the blocks ``--unfreeze`` counts from the top ([] when the source has none)."""
        try:
            return [name for name, _ in self.blocks().blocks]
        except BackboneOptionError:
            return []

    def describe(self) -> dict[str, Any]:
        """What ``hubtune info`` prints."""
        return {
            "ref": str(self.ref),
            "source": self.ref.source,
            "modality": self.modality,
            "dim": self.dim,
            "revision": self.revision,
            "weights": self.weights,
            "fingerprint": self.fingerprint(),
            "layer": self.layer,
            "pool": self.pool,
            "layers": self.layers,
            "pools": list(self.layer_pools.names) if self.layer_pools else [],
            "blocks": self.block_names(),
            "precision": self.precision,
            "device": str(self.device),
            "preprocess": self.preprocess_config,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }
