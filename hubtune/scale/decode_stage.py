"""Decoding on CPU nodes: the first stage of a split Ray pipeline (``extract --engine ray --decoders N``).

By default each embedding actor reads and decodes its shard in its own DataLoader processes, on
its own node. With ``--decoders N`` the Ray engine runs two actor pools instead: ``N`` decode actors
that ask Ray for one CPU and no GPU (so Ray may place them on any node with free CPUs, CPU-only
nodes included) read and preprocess whole shards, and the embedding actors receive each shard's
tensors through Ray's object store and only batch them and run the model. The shard stays the
unit of work: the embedding actor writes its files and its marker exactly as when it decodes.

A shard's samples travel as one safetensors blob (tensors named ``<position>/<field>``) and a JSON
object of per-position errors: tensors and text, nothing that runs code when read. One shard is one
row of a Ray dataset, and a value holds at most 2 GB: at 224 x 224 float32 (602 KB an image) that
is about 3,300 images, so such runs need ``--shards`` at or above items / 3,000.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hubtune.errors import InputError, ShardError
from hubtune.fingerprint import canonical_json
from hubtune.scale.shards import Shard, read_items, read_plan

if TYPE_CHECKING:
    import numpy as np

    from hubtune.backbone import Backbone
    from hubtune.data import Item

MAX_PAYLOAD = (2 << 30) - (16 << 20)  # under Arrow's 2 GB per binary value, with room for the row's other columns


def preprocess_digest(backbone: "Backbone") -> str:
    """What decides a sample: the decode and embed actors must agree on it (same library versions)."""
    return hashlib.blake2b(canonical_json(backbone.preprocess_config).encode(), digest_size=16).hexdigest()


def pack(prepared: Sequence[Any]) -> tuple[bytes, str]:
    """Prepared samples (or :class:`InputError` per item) -> ``(safetensors bytes, errors JSON)``."""
    from safetensors.torch import save

    tensors = {f"{position}/{name}": tensor.contiguous()
               for position, sample in enumerate(prepared) if not isinstance(sample, InputError)
               for name, tensor in sample.items()}
    errors = {str(position): str(sample) for position, sample in enumerate(prepared) if isinstance(sample, InputError)}
    return (save(tensors) if tensors else b""), json.dumps(errors)


def unpack(items: Sequence["Item"], payload: bytes, errors: str) -> dict[bytes, Any]:
    """The inverse of :func:`pack`, keyed by each item's content key (what ``extract(prepared=)`` takes)."""
    from safetensors.torch import load

    samples: dict[int, dict[str, Any]] = {}
    for name, tensor in (load(payload) if payload else {}).items():
        position, field = name.split("/", 1)
        samples.setdefault(int(position), {})[field] = tensor
    failed = {int(position): InputError(reason) for position, reason in json.loads(errors).items()}
    if len(samples) + len(failed) != len(items):
        raise ShardError(f"a decoded shard holds {len(samples)} samples and {len(failed)} errors for {len(items)} items")
    return {item.key: failed[i] if i in failed else samples[i] for i, item in enumerate(items)}


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class ShardDecoder:
    """A Ray Data callable class on a CPU-only actor: whole shards -> their preprocessed tensors.

    It loads the backbone once, on the CPU, for its preprocessing only (the same code, config and
    tokeniser as the embedding actors), and reads the items the driver listed in the plan.
    """

    def __init__(self, folder: str):
        from hubtune.api import load_backbone

        self.folder = Path(folder)
        plan = read_plan(folder)
        backbone = load_backbone(plan.ref, replace(plan.load_options(), device="cpu", precision="fp32"))
        self.preprocessor = backbone.preprocessor
        self.digest = preprocess_digest(backbone)

    def __call__(self, batch: dict[str, "np.ndarray"]) -> dict[str, "np.ndarray"]:
        import numpy as np

        from hubtune.extract import prepare_items

        payloads, errors = [], []
        for index, start, stop in zip(batch["index"], batch["start"], batch["stop"]):
            shard = Shard(int(index), int(start), int(stop))
            payload, failed = pack(prepare_items(self.preprocessor, read_items(self.folder, shard)))
            if len(payload) > MAX_PAYLOAD:
                raise ShardError(f"{shard.name}'s preprocessed tensors take {len(payload) / 1e9:.1f} GB, over the 2 GB a "
                                 "Ray value holds; rerun with more --shards (smaller shards)")
            payloads.append(payload)
            errors.append(failed)
        count = len(payloads)
        return {"index": batch["index"], "start": batch["start"], "stop": batch["stop"],
                "payload": np.array(payloads, dtype=object), "errors": np.array(errors, dtype=object),
                "preprocess": np.array([self.digest] * count, dtype=object),
                "decoded_on": np.array([node_id()] * count, dtype=object)}
