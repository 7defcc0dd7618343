"""Reading vectors back: which fingerprint a command means, and exporting a dataset's vectors.

Commands that read vectors (``export``, ``index build``, ``search``, ``train``) name the model and
options the way ``extract`` did. The exact same request finds its fingerprint through the store's
memo; otherwise options left unset match any value, and when that leaves several fingerprints for
the dataset the error lists them with what tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.atomic import atomic_write, staged
from hubtune.backbone import LoadOptions
from hubtune.errors import HubtuneError
from hubtune.extract import request_record
from hubtune.store import EmbeddingStore, manifest_keys

if TYPE_CHECKING:
    import numpy as np


_EXPORT_PIECE_BYTES = 8 << 20  # float32 bytes gathered per piece of an export


class FingerprintLookupError(HubtuneError, LookupError):
    """No fingerprint, or more than one, fits the model and options given."""

    exit_code = 2


def _covers(store: EmbeddingStore, fingerprint: str, keys: list[bytes]) -> bool:
    return any(store.has(fingerprint, keys[:1000]))


def _matches(fields: dict[str, Any], ref_text: str, options: LoadOptions, stored_dtype: str | None,
             any_weights: bool = False) -> bool:
    from hubtune.registry import resolve_ref

    ref = resolve_ref(ref_text)
    if fields["source"] != ref.source or fields["model"] != ref.id:
        return False
    if ref.revision and not str(fields["revision"] or "").startswith(ref.revision):
        return False
    if not any_weights and fields["weights"] != options.parsed_weights.identity():
        return False
    wanted = {"layer": options.layer, "stored_dtype": stored_dtype,
              "precision": None if options.precision == "auto" else options.precision}
    pool_ok = options.pool is None or options.pool == fields["pool"] or {options.pool, fields["pool"]} == {"mean", "avg"}
    return pool_ok and all(value is None or fields[name] == value for name, value in wanted.items())


def find_fingerprint(
    store: EmbeddingStore, ref: str, dataset: str, options: LoadOptions | None = None,
    stored_dtype: str | None = None,
) -> str:
    """The one fingerprint holding ``dataset``'s vectors for ``ref`` + ``options``."""
    options = options or LoadOptions()
    keys = manifest_keys(store.manifest(dataset))
    remembered = store.recall_request(request_record(ref, options, stored_dtype or "float16"))
    if remembered and _covers(store, remembered, keys):
        return remembered
    def candidates_for(any_weights: bool) -> list[str]:
        return [fp for fp, meta in store.fingerprints().items()
                if _matches(meta["fields"], ref, options, stored_dtype, any_weights) and _covers(store, fp, keys)]

    candidates = candidates_for(any_weights=False)
    if not candidates and options.weights == "default":  # --weights left unset: like any unset option, any value
        candidates = candidates_for(any_weights=True)
    if len(candidates) > 1:  # vectors that only share files with the dataset (another dataset's) do not count
        recorded = set(store.recorded_fingerprints(dataset))
        candidates = [fp for fp in candidates if fp in recorded] or candidates
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FingerprintLookupError(
            f"the store at {store.path} has no vectors of dataset {dataset!r} for {ref} with these options; "
            f"run `hubtune extract {ref} DATA --cache {store.path} --dataset {dataset}` first "
            "(`hubtune cache ls` shows what is there)"
        )
    described = []
    for fp in candidates:
        fields = store.fingerprints()[fp]["fields"]
        described.append(
            f"{fp} (revision {fields['revision']}, weights {fields['weights']}, layer {fields['layer']}, pool {fields['pool']}, "
            f"precision {fields['precision']}, stored {fields['stored_dtype']})"
        )
    raise FingerprintLookupError(
        f"{len(candidates)} sets of vectors of dataset {dataset!r} match {ref}; add the option that tells "
        "them apart (--layer, --pool, --precision, --weights or @revision): " + "; ".join(described)
    )


def resolved_options(store: EmbeddingStore, fingerprint: str, options: LoadOptions) -> LoadOptions:
    """``options`` with the layer, pooling, precision and random weights the fingerprint was made
    with: a head records these, so ``predict`` rebuilds exactly that backbone even when the lookup
    that found the vectors left them unset (unset matches any value)."""
    from dataclasses import replace

    fields = store.fingerprints()[fingerprint]["fields"]
    tag = fields["weights"]
    weights = tag if tag.startswith("random:") else options.weights
    if tag.startswith("file-sha256:") and options.parsed_weights.kind != "file":
        raise FingerprintLookupError(f"the vectors of fingerprint {fingerprint} were made with a weights file "
                                     f"({tag}); pass it with --weights PATH so the head can rebuild that backbone")
    return replace(options, layer=fields["layer"], pool=fields["pool"], precision=fields["precision"], weights=weights)


@dataclass
class DatasetVectors:
    """A dataset's stored vectors in dataset order, with the rows' annotations."""

    vectors: "np.ndarray"  # (rows, dim) float32
    keys: list[str]
    labels: list[str | None]
    splits: list[str]
    origins: list[str]
    missing: int  # items with no vector (failed, or not extracted yet)


def _present(store: EmbeddingStore, fingerprint: str, dataset: str) -> tuple[dict[str, list], "np.ndarray", "np.ndarray"]:
    """The manifest, the positions of items that have a vector, and those vectors' locations."""
    import numpy as np

    manifest = store.manifest(dataset)
    locations = store.locate(fingerprint, manifest_keys(manifest))
    present = np.flatnonzero(locations[:, 0] >= 0)
    return manifest, present, locations[present]


def load_dataset_vectors(store: EmbeddingStore, fingerprint: str, dataset: str, dtype: str = "float32") -> DatasetVectors:
    """Every item of ``dataset`` that has a vector, in dataset order (duplicates repeated).

    ``dtype="float16"`` keeps large rows (split-point activations) at half the memory.
    """
    manifest, present, locations = _present(store, fingerprint, dataset)
    pick = present.tolist()
    return DatasetVectors(
        vectors=store.gather(fingerprint, locations, dtype),
        keys=[manifest["keys"][i] for i in pick],
        labels=[manifest["labels"][i] for i in pick],
        splits=[manifest["splits"][i] for i in pick],
        origins=[manifest["origins"][i] for i in pick],
        missing=len(manifest["keys"]) - len(pick),
    )


def _json_column(values: list, rows: list[int]) -> list[str]:
    """JSON literals of ``values[rows]`` through the C string encoder (strings, or null)."""
    from json.encoder import encode_basestring_ascii as encode

    return ["null" if values[i] is None else encode(str(values[i])) for i in rows]


def _write_items(path: Path, manifest: dict[str, list], rows: list[int]) -> None:
    keys = [manifest["keys"][i] for i in rows]
    labels, splits, origins = (_json_column(manifest[c], rows) for c in ("labels", "splits", "origins"))
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(
            f'{{"key": "{key}", "label": {label}, "split": {split}, "origin": {origin}}}\n'
            for key, label, split, origin in zip(keys, labels, splits, origins)
        )


def export_dataset(store: EmbeddingStore, fingerprint: str, dataset: str, out: str | Path) -> dict[str, Any]:
    """Write ``embeddings.npy`` (float32, dataset order) and ``items.jsonl`` to ``out``.

    Streams at memory speed with flat memory: vectors are gathered in pieces of about 8 MB into
    two reused buffers, one piece written while the next fills, and the JSON lines are formatted
    in a thread beside them (C string encoder). Each file appears whole or not at all (temporary
    name, then rename); like ``np.save`` the bytes go to the OS without an fsync, since the store
    can always export them again.
    """
    import numpy as np

    from concurrent.futures import ThreadPoolExecutor

    manifest, present, locations = _present(store, fingerprint, dataset)
    dim = store.fingerprints()[fingerprint]["dim"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = min(len(present), max(1, _EXPORT_PIECE_BYTES // (4 * max(dim, 1))))
    buffers = [np.empty((rows, dim), dtype=np.float32) for _ in range(2)]
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (len(present), dim)}
    with ThreadPoolExecutor(max_workers=2) as pool:
        lines = pool.submit(atomic_write, out / "items.jsonl",
                            lambda temporary: _write_items(temporary, manifest, present.tolist()), False)
        with staged(out / "embeddings.npy", durable=False) as temporary, open(temporary, "wb") as handle:
            np.lib.format.write_array_header_1_0(handle, header)
            written = None
            for piece in store.gather_chunks(fingerprint, locations, buffers):
                if written is not None:
                    written.result()  # the buffer the next piece fills is free again
                written = pool.submit(handle.write, piece)
            if written is not None:
                written.result()
        lines.result()
    return {"rows": int(len(present)), "dim": int(dim), "missing": len(manifest["keys"]) - len(present),
            "fingerprint": fingerprint, "path": str(out)}
