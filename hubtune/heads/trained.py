"""A trained head as a folder: ``head.safetensors`` (tensors, no pickle) + ``head.json``.

``head.json`` holds the model reference and options, the fingerprint of the vectors it was trained
on, the classes, the normalisation, the hyperparameters and the validation metrics. Using a head on
vectors of another fingerprint is refused with a message naming both.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hubtune.atomic import atomic_write
from hubtune.errors import HeadError, option
from hubtune.heads import knn, linear, mlp
from hubtune.heads.features import Normaliser
from hubtune.heads.protocol import HeadMethods

HEAD_KINDS = ("linear", "mlp", "knn")
FORMAT = 1


def check_head_folder(folder: str | Path) -> Path:
    """``folder`` if a head may be written there: new, empty, or a head folder (which it replaces).

    A folder holding other files is refused, so a mistyped ``--out`` cannot drop a head into a data
    folder; checked before training, so the refusal costs nothing.
    """
    folder = Path(folder)
    if folder.is_dir() and not (folder / "head.json").is_file() and any(folder.iterdir()):
        raise HeadError(f"{option('out', folder)} holds other files and no head; give a new or empty folder "
                        "(or an existing head folder, which is replaced)")
    if folder.exists() and not folder.is_dir():
        raise HeadError(f"{option('out', folder)} is a file; give a folder for the head")
    return folder


def write_head_files(folder: str | Path, write_tensors: Callable[[str], object], manifest: str) -> Path:
    """A head folder: ``head.safetensors`` (``write_tensors(path)``), then ``head.json``, each staged and
    renamed, so neither is ever half-written, and each with the umask's mode (safetensors alone writes 0600)."""
    folder = check_head_folder(folder)
    atomic_write(folder / "head.safetensors", write_tensors)
    atomic_write(folder / "head.json", lambda path: Path(path).write_text(manifest))
    return folder


@dataclass(repr=False)  # HeadMethods' short repr
class TrainedHead(HeadMethods):
    """A linear, mlp or knn head on frozen vectors (``predict``, ``predict_proba``, ``evaluate``: :class:`HeadMethods`)."""

    kind: str
    classes: list[str]
    normaliser: Normaliser
    tensors: dict[str, np.ndarray]
    hyperparameters: dict[str, Any]
    model: dict[str, Any]  # ref, options and fingerprint of the vectors
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        """The width of the vectors the head reads."""
        if self.kind == "linear":
            return int(self.tensors["weight"].shape[0])
        if self.kind == "knn":
            return int(self.tensors["train"].shape[1])
        return int(self.tensors["mlp.0.weight"].shape[1])

    def probabilities(self, vectors: np.ndarray, fingerprint: str | None = None) -> np.ndarray:
        """``(N, classes)`` class probabilities for backbone vectors of ``fingerprint``."""
        if fingerprint is not None and fingerprint != self.model["fingerprint"]:
            raise HeadError(
                f"this head was trained on vectors {self.model['fingerprint']} ({self.model['ref']}), but the "
                f"vectors given are {fingerprint}: embed with the same model and options"
            )
        x = self.normaliser(np.asarray(vectors, dtype=np.float32))  # as the vectors were stored and trained on
        if self.kind == "linear":
            return linear.LinearModel(self.tensors["weight"], self.tensors["bias"], self.hyperparameters["C"]).probabilities(x)
        if self.kind == "knn":
            model = knn.KNNModel(self.tensors["train"], self.tensors["labels"], len(self.classes),
                                 self.hyperparameters["k"], self.hyperparameters["temperature"])
            return model.probabilities(x)
        state = {k[len("mlp."):]: v for k, v in self.tensors.items() if k.startswith("mlp.")}
        return mlp.probabilities(state, x, mlp.MLPConfig(**self.hyperparameters["mlp"]))

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        tensors = {k: np.ascontiguousarray(v) for k, v in {**self.tensors, **self.normaliser.tensors()}.items()}
        manifest = {"format": FORMAT, "kind": self.kind, "classes": self.classes, "normalisation": self.normaliser.kind,
                    "hyperparameters": self.hyperparameters, "model": self.model, "metrics": self.metrics}
        return write_head_files(folder, lambda path: save_file(tensors, path), json.dumps(manifest, indent=2, default=_plain))

    @classmethod
    def load(cls, folder: str | Path) -> "TrainedHead":
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / "head.json").is_file() or not (folder / "head.safetensors").is_file():
            raise HeadError(f"{folder} is not a saved head (expected head.json and head.safetensors)")
        manifest = json.loads((folder / "head.json").read_text())
        if manifest.get("format") != FORMAT or manifest.get("kind") not in HEAD_KINDS:
            raise HeadError(f"{folder}: unsupported head format {manifest.get('format')} / kind {manifest.get('kind')}")
        tensors = load_file(str(folder / "head.safetensors"))
        normaliser = Normaliser(manifest["normalisation"], tensors.pop("norm.mean", None), tensors.pop("norm.std", None))
        return cls(manifest["kind"], manifest["classes"], normaliser, tensors, manifest["hyperparameters"],
                   manifest["model"], manifest["metrics"])


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
