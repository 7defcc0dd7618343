"""The options that decide a backbone: ``--weights`` and the shared model options.

Kept apart from :mod:`hubtune.backbone` so that what a user asks for (plain data, cheap to import)
is separate from the network that honours it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from hubtune.errors import BackboneOptionError, option
from hubtune.fingerprint import hash_file

if TYPE_CHECKING:
    import torch

TOWERS = ("image", "text")


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
                raise BackboneOptionError(f"{option('weights', repr(text))}: the seed after 'random:' must be a whole number")
            return cls("random", seed=int(seed_text))
        path = Path(text).expanduser()
        if path.suffix != ".safetensors":
            raise BackboneOptionError(
                f"{option('weights', repr(text))}: expected 'default', 'random[:SEED]' or a .safetensors file "
                "(pickled checkpoints are not loaded; convert with safetensors.torch.save_file)"
            )
        if not path.is_file():
            raise BackboneOptionError(f"{option('weights', repr(text))}: no such file")
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
            raise BackboneOptionError(f"{option('weights', self.path)}: not a readable safetensors file ({exc})") from exc


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
    prompt: str | None = None  # --prompt NAME: one of the model's declared prompts
    prompt_text: str | None = None  # --prompt-text TEXT ("" asks for no prompt, even over a default one)
    dim: int | None = None  # --dim N: keep the first N dimensions (Matryoshka); None: the full vector
    tower: str | None = None  # which modality to embed ("image" or "text"); two-tower models pick a tower by it
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def parsed_weights(self) -> Weights:
        return Weights.parse(self.weights)


#: the model options every call that names a model takes (``LoadOptions``' fields)
MODEL_OPTIONS = tuple(f.name for f in fields(LoadOptions) if f.name != "extra")


def load_options(options: LoadOptions | None, overrides: Mapping[str, Any], caller: str,
                 own: Sequence[str] = ()) -> LoadOptions:
    """``options`` with ``overrides`` (LoadOptions field names) applied; any other name is a TypeError
    listing the model options and ``own``, the caller's own parameters (with the nearest name, if one is close)."""
    import difflib

    unknown = sorted(set(overrides) - set(MODEL_OPTIONS))
    if unknown:
        near = {name.lower(): name for name in (*own, *MODEL_OPTIONS)}
        close = difflib.get_close_matches(unknown[0].lower(), list(near), n=1)
        raise TypeError(f"{caller}() got unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}"
                        + (f"; its own parameters are {', '.join(own)}" if own else "")
                        + f"; model options are {', '.join(MODEL_OPTIONS)}"
                        + (f"; did you mean {near[close[0]]!r}?" if close else ""))
    return replace(options or LoadOptions(), **overrides)


def load_weights_into(model: "torch.nn.Module", weights: Weights, what: str) -> None:
    """Load a safetensors state dict into ``model``, strictly, with a readable error."""
    state = weights.load_state_dict()
    expected = model.state_dict()
    wrong = [f"{name} {tuple(tensor.shape)} (the model's: {tuple(expected[name].shape)})"
             for name, tensor in state.items() if name in expected and expected[name].shape != tensor.shape]
    if wrong:
        raise BackboneOptionError(f"{option('weights', weights.path)}: does not fit {what}: {len(wrong)} tensors have another "
                                  f"shape, e.g. {'; '.join(wrong[:3])}; is it a checkpoint of another architecture?")
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise BackboneOptionError(
            f"{option('weights', weights.path)}: does not fit {what}: "
            f"missing {list(result.missing_keys)[:5]}, unexpected {list(result.unexpected_keys)[:5]} "
            "(first five of each)"
        )
