"""``hubtune export-model``: a fine-tuned head as one safetensors checkpoint plus a plain-torch loader.

What the network needs is the backbone's to say (:meth:`~hubtune.backbone.Backbone.export_recipe`):
a source whose library rebuilds the network from a state dict names a small rebuild module, copied
beside the checkpoint, and the checkpoint holds the whole network (frozen blocks from the
backbone's weights, trained blocks from the head folder) as ``backbone.*``; any other source gets a
``torch.export`` program of its forward (``OUT.pt2``). The head is ``head.*``. The metadata
(``hubtune``, JSON) names the recipe, the head's shape, the classes and the preprocessing, which is
all :mod:`hubtune.finetune.standalone` (copied beside it as ``hubtune_loader.py``) needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.atomic import atomic_write
from hubtune.errors import HeadError

if TYPE_CHECKING:
    from hubtune.backbone import Backbone

LOADER_NAME = "hubtune_loader.py"


def _save_program(backbone: "Backbone", path: Path) -> list[str]:
    """A ``torch.export`` program of ``backbone.forward`` (batch and sequence length dynamic); the
    names of its inputs, in the order the loader passes them."""
    import torch

    sample = backbone.to_device(backbone.preprocessor.collate(
        [backbone.preprocessor(backbone.probe_item())] * 2))  # two rows: the batch dimension is not specialised

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = backbone.model  # registered, so its weights are the program's parameters

        def forward(self, batch: dict[str, Any]) -> Any:
            return backbone.forward(batch)

    dynamic = {key: {dim: torch.export.Dim.AUTO for dim in range(min(value.ndim, 2 if backbone.modality == "text" else 1))}
               for key, value in sample.items()}
    try:
        program = torch.export.export(Forward().eval(), (sample,), dynamic_shapes=(dynamic,))
    except Exception as exc:
        raise HeadError(f"export-model: {backbone.ref} has no rebuild recipe of its source, and torch.export cannot "
                        f"trace its forward ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from exc
    atomic_write(path, lambda temporary: torch.export.save(program, temporary))
    return list(sample)


def export_model(head_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Write ``out`` (safetensors) and ``hubtune_loader.py`` beside it (with the source's rebuild module,
    or a ``torch.export`` program); return what was written."""
    import torch
    from safetensors.torch import save_file

    from hubtune.finetune import standalone
    from hubtune.heads.use import head_backbone, load_head

    head = load_head(head_dir)
    if head.kind != "finetune":
        raise HeadError(f"{head_dir} is a {head.kind} head on frozen vectors; export-model takes a `hubtune finetune` result")
    encoder = head_backbone(head)  # loads the trained top into the backbone
    backbone = getattr(encoder, "backbone", encoder)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    recipe = dict(backbone.export_recipe())
    meta = {**recipe, "modality": backbone.modality, "dim": backbone.dim, "classes": head.classes,
            "head": head.head_spec, "ref": head.model["ref"], "revision": backbone.revision, "weights": backbone.weights,
            "preprocess": backbone.preprocess_config, "unfrozen": head.model["unfrozen"]}
    tensors: dict[str, torch.Tensor] = {k: v for k, v in head.tensors.items() if k.startswith("head.")}
    if recipe["library"] == "torch.export":
        program = out.with_suffix(".pt2")
        meta.update(program=program.name, inputs=_save_program(backbone, program))
    else:
        module = f"hubtune_loader_{recipe['library'].replace('.', '_')}.py"
        shutil.copyfile(meta.pop("loader"), out.parent / module)
        meta["loader_module"] = module
        tensors.update({f"backbone.{k}": v for k, v in backbone.model.state_dict().items()})
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write(out, lambda path: save_file(contiguous, path, metadata={"hubtune": json.dumps(meta, default=str)}))
    loader = out.parent / LOADER_NAME
    shutil.copyfile(standalone.__file__, loader)
    return {"path": str(out), "loader": str(loader), "tensors": len(tensors), "classes": head.classes,
            "library": recipe["library"]}
