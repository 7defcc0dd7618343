"""A fine-tuned model as a head folder: ``head.safetensors`` + ``head.json``, like the other heads.

The tensors are the trained top blocks under their names in the backbone (``backbone.layer4.1.
conv1.weight``), buffers included, and the head (``head.weight``); the frozen part is not copied: it
is the backbone named in ``head.json``, checked by fingerprint when the head is used. ``predict`` and
``eval`` go through :func:`hubtune.heads.use.head_backbone`, which :meth:`FinetunedHead.bind`\\ s the
head to the backbone: the trained tensors are loaded into it and the frozen prefix (a
:class:`~hubtune.finetune.activations.SplitEncoder`) embeds new inputs through the same cache.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hubtune.errors import HeadError
from hubtune.heads.protocol import HeadMethods
from hubtune.heads.trained import write_head_files

if TYPE_CHECKING:
    import torch

    from hubtune.backbone import Backbone

KIND = "finetune"
FORMAT = 1


@dataclass(repr=False)  # HeadMethods' short repr
class FinetunedHead(HeadMethods):
    """Trained top blocks + a head (``predict``, ``predict_proba``, ``evaluate``: :class:`HeadMethods`)."""

    classes: list[str]
    model: dict[str, Any]  # ref, options, fingerprint (of the cached rows), backbone_fingerprint, start, unfrozen
    head_spec: dict[str, Any]  # {"kind": "linear"} or {"kind": "mlp", "hidden": [...], "dropout": p}
    tensors: dict[str, "torch.Tensor"]  # backbone.<name> and head.<name>
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    kind: str = KIND
    _top: Any = field(default=None, repr=False)
    _encoder: Any = field(default=None, repr=False)

    # -- files --------------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.tensors.items()}
        manifest = {"format": FORMAT, "kind": KIND, "classes": self.classes, "head": self.head_spec,
                    "model": self.model, "hyperparameters": self.hyperparameters, "metrics": self.metrics}
        return write_head_files(folder, lambda path: save_file(tensors, path), json.dumps(manifest, indent=2, default=str))

    @classmethod
    def load(cls, folder: str | Path) -> "FinetunedHead":
        from safetensors.torch import load_file

        folder = Path(folder)
        manifest = json.loads((folder / "head.json").read_text())
        if manifest.get("format") != FORMAT or manifest.get("kind") != KIND:
            raise HeadError(f"{folder}: unsupported fine-tuned head format {manifest.get('format')}")
        return cls(manifest["classes"], manifest["model"], manifest["head"], load_file(str(folder / "head.safetensors")),
                   manifest["hyperparameters"], manifest["metrics"])

    # -- use ------------------------------------------------------------------------------------------
    def bind(self, backbone: "Backbone") -> "Backbone":
        """Load the trained top into ``backbone``; return what embeds inputs for this head.

        That is the frozen prefix (a ``SplitEncoder``), or the backbone itself for a frozen head.
        """
        from hubtune.finetune.activations import SplitEncoder
        from hubtune.finetune.blocks import build_top
        from hubtune.finetune.standalone import build_head

        if backbone.fingerprint() != self.model["backbone_fingerprint"]:
            raise HeadError(
                f"{self.model['ref']} now loads as {backbone.fingerprint()} but the head was fine-tuned on "
                f"{self.model['backbone_fingerprint']}: the model's revision or preprocessing changed; pin the revision"
            )
        state = {k[len("backbone."):]: v for k, v in self.tensors.items() if k.startswith("backbone.")}
        result = backbone.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise HeadError(f"the saved top does not fit {self.model['ref']}: unexpected {result.unexpected_keys[:5]}")
        start, unfrozen = self.model["start"], self.model["unfrozen"]
        split = backbone.blocks() if unfrozen else None
        head = build_head(self.head_spec, backbone.dim, len(self.classes))
        head.load_state_dict({k[len("head."):]: v for k, v in self.tensors.items() if k.startswith("head.")})
        self._top = build_top(split, start, head).to(backbone.device).eval()
        self._encoder = SplitEncoder(backbone, split, start) if unfrozen else backbone
        return self._encoder

    def probabilities(self, vectors: np.ndarray, fingerprint: str | None = None, batch_size: int = 256) -> np.ndarray:
        """``(N, classes)`` from rows of the head's fingerprint (split-point activations, or embeddings)."""
        import torch

        from hubtune.finetune.activations import CachedBatches
        from hubtune.finetune.train import run_top

        if fingerprint is not None and fingerprint != self.model["fingerprint"]:
            raise HeadError(f"this head reads rows {self.model['fingerprint']} ({self.model['ref']}), not {fingerprint}")
        if self._top is None:
            raise HeadError("bind the head to its backbone first (hubtune.heads.use.head_backbone does)")
        encoder = self._encoder if self.model["unfrozen"] else None
        device = self._encoder.device
        source = CachedBatches(encoder, np.asarray(vectors, dtype=np.float32), device)
        _, logits = run_top(self._top, source, range(len(vectors)), batch_size, self._encoder.autocast)
        return torch.softmax(torch.as_tensor(logits, dtype=torch.float64), 1).numpy()


def top_tensors(backbone: "Backbone", top: "torch.nn.Module") -> dict[str, "torch.Tensor"]:
    """The trained tensors under their backbone names (``backbone.*``) and the head's (``head.*``)."""
    owned = {id(t) for module in (*top.blocks, *top.neck) for t in (*module.parameters(), *module.buffers())}
    tensors = {f"backbone.{name}": t.detach().clone() for name, t in backbone.model.state_dict(keep_vars=True).items()
               if id(t) in owned}
    tensors.update({f"head.{name}": t.detach().clone() for name, t in top.head.state_dict().items()})
    return tensors
