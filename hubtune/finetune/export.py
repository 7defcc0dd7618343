"""``hubtune export-model``: a fine-tuned head as one safetensors checkpoint plus a plain-torch loader.

The checkpoint holds the whole network (its frozen blocks from the backbone's weights, its trained
blocks from the head folder) as ``backbone.*`` under the source library's own names, and the head
as ``head.*``. Its metadata (``hubtune``, JSON) names the library and architecture, the pooling,
the head's shape, the classes and the preprocessing, which is all :mod:`hubtune.finetune.standalone`
(copied beside the checkpoint as ``hubtune_loader.py``) needs to rebuild it without hubtune.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.atomic import atomic_write
from hubtune.heads.features import HeadError

if TYPE_CHECKING:
    from hubtune.backbone import Backbone

LOADER_NAME = "hubtune_loader.py"


def library_meta(backbone: "Backbone") -> dict[str, Any]:
    """How the standalone loader rebuilds ``backbone``'s network."""
    model, source = backbone.model, backbone.ref.source
    if source == "timm":
        pool = getattr(model, "global_pool", None)
        pool = getattr(pool, "pool_type", pool)
        return {"library": "timm", "architecture": model.pretrained_cfg["architecture"],
                "num_classes": model.num_classes, "global_pool": pool if isinstance(pool, str) else None}
    if source == "torchvision":
        return {"library": "torchvision", "architecture": backbone.ref.id}
    if source == "hf":
        return {"library": "transformers", "config": model.config.to_dict(), "pool": backbone.pool,
                "normalize": bool(getattr(backbone, "normalize", False))}
    raise HeadError(f"export-model does not know how to rebuild a {source} model without hubtune")


def export_model(head_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``out`` (safetensors) and ``hubtune_loader.py`` beside it; return what was written."""
    import torch
    from safetensors.torch import save_file

    from hubtune.finetune import standalone
    from hubtune.heads.use import head_backbone, load_head

    head = load_head(head_dir)
    if head.kind != "finetune":
        raise HeadError(f"{head_dir} is a {head.kind} head on frozen vectors; export-model takes a `hubtune finetune` result")
    encoder = head_backbone(head)  # loads the trained top into the backbone
    backbone = getattr(encoder, "backbone", encoder)
    meta = {**library_meta(backbone), "modality": backbone.modality, "dim": backbone.dim, "classes": head.classes,
            "head": head.head_spec, "ref": head.model["ref"], "revision": backbone.revision,
            "preprocess": backbone.preprocess_config, "unfrozen": head.model["unfrozen"]}
    tensors: dict[str, torch.Tensor] = {f"backbone.{k}": v for k, v in backbone.model.state_dict().items()}
    tensors.update({k: v for k, v in head.tensors.items() if k.startswith("head.")})
    out = Path(out)
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(out, lambda path: save_file(contiguous, path, metadata={"hubtune": json.dumps(meta, default=str)}))
    loader = out.parent / LOADER_NAME
    shutil.copyfile(standalone.__file__, loader)
    return {"path": str(out), "loader": str(loader), "tensors": len(tensors), "classes": head.classes}
