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

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Sequence, cast

from hubtune.errors import BackboneOptionError, InputError, TowerError, option
from hubtune.fingerprint import STORE_FORMAT_VERSION, compute_fingerprint
from hubtune.imageio import to_rgb_image
from hubtune.options import RANDOM_INSTEAD, LoadOptions, Weights, load_weights_into

__all__ = ["RANDOM_INSTEAD", "Backbone", "ImagePreprocessor", "LoadOptions", "Preprocessor", "Weights",
           "load_weights_into"]

if TYPE_CHECKING:
    import numpy as np
    import torch

    from hubtune.blocks import BlockSplit
    from hubtune.pooling import LayerPools
    from hubtune.refs import ModelRef

STORED_DTYPES = ("float16", "float32")


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
    #: the name of the prompt a source applies when none is asked for (a repository's default)
    default_prompt_name: str | None = None

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
        self.tower: str | None = None  # a two-tower model's source names the tower it built (a fingerprint field)
        self.prompt: str | None = None  # the prompt text put before every input (set by select_prompt)
        self.truncate_dim: int | None = None  # --dim: the first N dimensions are kept (set by select_dim)
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

    def prompts(self) -> dict[str, str]:
        """The prompts the model declares, by name (a sentence-transformers repo's ``prompts``); {} if none."""
        return {}

    def apply_prompt(self, text: str | None) -> None:
        """Put ``text`` before every input from now on (``None``: no prompt). Sources whose models take
        prompts override this; the default refuses one, so a prompt is never silently dropped."""
        if text is not None:
            raise BackboneOptionError(f"{self.ref} does not take prompts ({self.modality} model); drop "
                                      f"{option('prompt')}/{option('prompt_text')}")

    # -- two-tower models (CLIP, SigLIP: an image and a text tower into one space) ---------------
    def tower_backbone(self, tower: str) -> "Backbone":
        """This model's backbone for ``tower`` (``image``/``text``), its layer, pool and ``--dim`` chosen
        so its vectors share this one's space: what embeds a text query over images (``search``) and
        the class prompts of ``train --head zeroshot``. A two-tower source overrides it, sharing the
        loaded weights; the default is ``self`` for its own modality, else :class:`TowerError`."""
        if tower != self.modality:
            raise self.tower_error(tower)
        return self

    def tower_error(self, tower: str) -> TowerError:
        return TowerError(f"{self.ref} embeds {self.modality}s and has no {tower} tower; pick a model that "
                          f"embeds {tower}s (`hubtune models`), or data of {self.modality}s", self.modality)

    def zeroshot_templates(self) -> list[str]:
        """The prompt templates (``"a photo of a {}."``) the model's family publishes for zero-shot
        classification; [] (the default): ``train --head zeroshot`` then needs ``--template``."""
        return []

    def zeroshot_scoring(self) -> tuple[str, float, float]:
        """How the model scores a cosine ``c`` between an image and a class text: ``("softmax", s, 0)``,
        softmax over classes of ``s * c`` (CLIP), or ``("sigmoid", s, b)``, ``sigmoid(s * c + b)`` (SigLIP);
        ``s`` is ``exp(logit_scale)``. The default raises: not a text-image model."""
        raise BackboneOptionError(f"{self.ref} is not a text-image model (CLIP, SigLIP): it has no zero-shot scoring")

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

    def choose(self, options: LoadOptions) -> "Backbone":
        """Apply every user choice a source declared options for: the tower, ``--layer``/``--pool``,
        the prompt and ``--dim`` (what :func:`hubtune.api.load_backbone` calls)."""
        if options.tower is not None and options.tower != self.modality:
            raise self.tower_error(options.tower)
        self.select(options.layer, options.pool)
        self.select_prompt(options.prompt, options.prompt_text)
        return self.select_dim(options.dim)

    def select_prompt(self, name: str | None = None, text: str | None = None) -> "Backbone":
        """Choose the prompt as ``SentenceTransformer.encode`` does: ``name`` from :meth:`prompts`, or
        ``text`` as given (``""``: none), else the model's :attr:`default_prompt_name`, else none."""
        declared = self.prompts()
        if name is not None and text is not None:
            raise BackboneOptionError(f"give {option('prompt', 'NAME')} or {option('prompt_text', 'TEXT')}, not both")
        if name is not None:
            if name not in declared:
                if type(self).apply_prompt is Backbone.apply_prompt:  # it takes no prompt at all: say so
                    self.apply_prompt(name)
                offered = ", ".join(sorted(declared)) or "none"
                raise BackboneOptionError(f"{self.ref} has no prompt {name!r}; its prompts: {offered} "
                                          f"(or give the text with {option('prompt_text')})")
            text = declared[name]
        elif text is None and self.default_prompt_name is not None:
            text = declared.get(self.default_prompt_name)
        self.apply_prompt(text or None)
        self.prompt, self._dim = text or None, None
        return self

    def select_dim(self, dim: int | None) -> "Backbone":
        """Keep the first ``dim`` dimensions of every vector (Matryoshka truncation, after the model's
        own normalisation and without renormalising, as sentence-transformers' ``truncate_dim``)."""
        self.truncate_dim, self._dim = None, None
        if dim is not None:
            if not 1 <= dim <= self.dim:
                raise BackboneOptionError(f"{option('dim', dim)}: {self.ref} makes {self.dim}-d vectors; give 1..{self.dim}")
            self.truncate_dim = dim if dim < self.dim else None
            self._dim = None
        return self

    def load_options(self) -> LoadOptions:
        """The options that rebuild exactly this backbone (what a head records): canonical layer and
        pool, resolved precision, the prompt text, the dimension kept and the tower."""
        from dataclasses import replace

        return replace(self.options, layer=self.layer, pool=self.pool, precision=self.precision, prompt=None,
                       prompt_text=self.prompt or "", dim=self.truncate_dim, tower=self.modality)

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
            vectors = self.forward(batch)  # (B, D)
        return vectors if self.truncate_dim is None else vectors[:, : self.truncate_dim]

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
            # set only where they apply, so the fingerprint of every other vector stays what it was
            **({"tower": self.tower} if self.tower is not None else {}),
            **({"prompt": self.prompt} if self.prompt is not None else {}),
            **({"dim": self.truncate_dim} if self.truncate_dim is not None else {}),
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
            "tower": self.tower,
            "prompt": self.prompt,
            "prompts": self.prompts(),
            "default_prompt": self.default_prompt_name,
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
