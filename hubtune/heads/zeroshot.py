"""The zero-shot head: a classifier built from class names by a text-image model's text tower.

For each class, every prompt template (``"a photo of a {}."``) is filled with the class name and
embedded by the text tower; the class vector is the mean of those L2-normalised text vectors,
normalised again (CLIP's recipe, ``zeroshot_classifier`` in OpenAI's ImageNet notebook). An input's
scores are its L2-normalised vector's cosines ``c`` with the class vectors, turned into probabilities
the way the model was trained (:meth:`hubtune.backbone.Backbone.zeroshot_scoring`): CLIP
``softmax(s * c)`` over classes, SigLIP ``sigmoid(s * c + b)`` per class. Nothing is trained: the
class vectors, the templates and the scoring are saved as a head folder (``head.safetensors`` +
``head.json``, like every head), and ``eval`` / ``predict`` use it on the data tower's vectors.

Any backbone whose ``tower_backbone("text")`` and ``zeroshot_scoring()`` answer can make one; the
templates default to the backbone's ``zeroshot_templates()``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from hubtune.errors import BackboneOptionError, HeadError, TowerError
from hubtune.heads.features import metrics
from hubtune.heads.protocol import HeadMethods
from hubtune.heads.trained import write_head_files

if TYPE_CHECKING:
    from hubtune.backbone import Backbone
    from hubtune.store.vectors import DatasetVectors

KIND = "zeroshot"
FORMAT = 1
SCORINGS = ("softmax", "sigmoid")


def check_templates(templates: Sequence[str]) -> list[str]:
    """Templates as given, each holding ``{}`` (where the class name goes)."""
    wrong = [template for template in templates if "{}" not in template]
    if wrong:
        raise HeadError(f"--template {wrong[0]!r} has no {{}} for the class name; e.g. --template 'a photo of a {{}}.'")
    return list(templates)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def class_vectors(text: "Backbone", classes: Sequence[str], templates: Sequence[str]) -> np.ndarray:
    """``(classes, dim)`` unit rows: per class, the renormalised mean of its templates' unit text vectors."""
    rows = []
    for name in classes:
        embedded = text.embed([template.replace("{}", name) for template in templates])  # (T, D)
        rows.append(_unit(_unit(embedded).mean(0)))
    return np.stack(rows).astype(np.float32)


@dataclass(repr=False)  # HeadMethods' short repr
class ZeroShotHead(HeadMethods):
    """Class vectors from the text tower, scored against the data tower's vectors (``predict``,
    ``predict_proba``, ``evaluate``: :class:`HeadMethods`)."""

    classes: list[str]
    weight: np.ndarray  # (classes, dim) float32, unit rows
    scoring: str  # softmax | sigmoid
    scale: float  # exp(logit_scale)
    bias: float  # logit_bias (sigmoid); 0 for softmax
    templates: list[str]
    model: dict[str, Any]  # ref, options and fingerprint of the vectors it scores (the data tower's)
    text_model: dict[str, Any] = field(default_factory=dict)  # the text tower's options and fingerprint
    metrics: dict[str, Any] = field(default_factory=dict)
    kind: str = KIND

    @property
    def dim(self) -> int:
        """The width of the vectors the head reads (the data tower's)."""
        return int(self.weight.shape[1])

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return self.scale * (_unit(vectors) @ self.weight.astype(np.float64).T) + self.bias  # (N, classes)

    def probabilities(self, vectors: np.ndarray, fingerprint: str | None = None) -> np.ndarray:
        """``(N, classes)``: softmax over classes (CLIP) or a sigmoid per class (SigLIP: rows need not sum to 1)."""
        if fingerprint is not None and fingerprint != self.model["fingerprint"]:
            raise HeadError(
                f"this zero-shot head scores vectors {self.model['fingerprint']} ({self.model['ref']}), but the "
                f"vectors given are {fingerprint}: embed with the same model and options"
            )
        logits = self.logits(vectors)
        if self.scoring == "sigmoid":
            return 1.0 / (1.0 + np.exp(-logits))
        shifted = np.exp(logits - logits.max(1, keepdims=True))
        return shifted / shifted.sum(1, keepdims=True)

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        tensors = {"weight": np.ascontiguousarray(self.weight, dtype=np.float32)}
        manifest = {"format": FORMAT, "kind": KIND, "classes": self.classes,
                    "hyperparameters": {"scoring": self.scoring, "scale": self.scale, "bias": self.bias,
                                        "templates": self.templates},
                    "model": self.model, "text_model": self.text_model, "metrics": self.metrics}
        return write_head_files(folder, lambda path: save_file(tensors, path), json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, folder: str | Path) -> "ZeroShotHead":
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / "head.json").is_file() or not (folder / "head.safetensors").is_file():
            raise HeadError(f"{folder} is not a saved head (expected head.json and head.safetensors)")
        manifest = json.loads((folder / "head.json").read_text())
        params = manifest.get("hyperparameters", {})
        if manifest.get("format") != FORMAT or manifest.get("kind") != KIND or params.get("scoring") not in SCORINGS:
            raise HeadError(f"{folder}: unsupported zero-shot head (format {manifest.get('format')}, "
                            f"scoring {params.get('scoring')})")
        weight = load_file(str(folder / "head.safetensors"))["weight"]
        return cls(manifest["classes"], weight, params["scoring"], float(params["scale"]), float(params["bias"]),
                   params["templates"], manifest["model"], manifest.get("text_model", {}), manifest.get("metrics", {}))


def text_tower(backbone: "Backbone") -> "Backbone":
    """The text tower of ``backbone``'s model, refused with a clear error for a model without one."""
    try:
        text = backbone.tower_backbone("text")
        text.zeroshot_scoring()
    except (TowerError, BackboneOptionError) as exc:
        raise HeadError(f"--head zeroshot needs a text-image model (CLIP, SigLIP) whose text tower embeds the "
                        f"class names: {exc}") from exc
    return text


def build_zeroshot_head(backbone: "Backbone", data: "DatasetVectors", model: dict[str, Any],
                        templates: Sequence[str] = ()) -> ZeroShotHead:
    """A zero-shot head for ``data``'s classes (its labels), scored on ``data``'s vectors.

    ``backbone`` made those vectors (``model`` records its reference, options and fingerprint);
    ``templates`` default to its family's (``zeroshot_templates()``). ``metrics["val"]`` is the
    head's score on every labelled item of ``data`` (nothing was fitted to them).
    """
    text = text_tower(backbone)
    chosen = check_templates(templates) or list(text.zeroshot_templates())
    if not chosen:
        raise HeadError(f"{model['ref']} declares no zero-shot templates; give at least one with --template "
                        "'a photo of a {}.' (repeatable)")
    labels = [str(label) if label is not None else None for label in data.labels]
    rows = [i for i, label in enumerate(labels) if label is not None]
    classes = sorted({str(labels[i]) for i in rows})
    if len(classes) < 2:
        raise HeadError(f"a classifier needs at least two classes (the dataset's labels), the dataset has {classes}")
    scoring, scale, bias = text.zeroshot_scoring()
    head = ZeroShotHead(classes, class_vectors(text, classes, chosen), scoring, float(scale), float(bias), chosen,
                        model, {"options": _plain_options(text), "fingerprint": text.fingerprint("float32")})
    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[str(labels[i])] for i in rows])
    report = metrics(head.probabilities(data.vectors[rows]), y, classes)
    report["majority_baseline"] = float(np.bincount(y, minlength=len(classes)).max() / len(y))
    head.metrics = {"val": report}
    return head


def vectors_backbone(ref: str, options: Any, fingerprint: str) -> "Backbone":
    """The backbone that made the vectors of ``fingerprint`` (``options`` resolved from the store)."""
    from hubtune.api import load_backbone

    backbone = load_backbone(ref, options)
    if fingerprint not in (backbone.fingerprint("float16"), backbone.fingerprint("float32")):
        raise HeadError(f"{ref} with these options embeds as {backbone.fingerprint()}, but the vectors are "
                        f"{fingerprint}: pass the options extract was given")
    return backbone


def _plain_options(backbone: "Backbone") -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(backbone.load_options())
