"""Which fingerprint a command means.

Commands that read vectors (``export``, ``index build``, ``search``, ``train``) name the model and
options the way ``extract`` did. The exact same request finds its fingerprint through the store's
memo; otherwise options left unset match any value, and when that leaves several fingerprints for
the dataset the error lists them with what tells them apart.
"""

from __future__ import annotations

from typing import Any

from hubtune.backbone import LoadOptions
from hubtune.errors import FingerprintLookupError, option
from hubtune.store.lmdb_store import EmbeddingStore
from hubtune.store.manifests import manifest_keys
from hubtune.store.requests import request_record


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
    if fields.get("dim") != options.dim:  # unset --dim means the full vector, not any width
        return False
    if options.tower is not None and fields.get("tower", options.tower) != options.tower:
        return False
    if options.prompt_text is not None and (fields.get("prompt") or "") != options.prompt_text:
        return False  # a prompt given by name is matched through the request memo (the name needs the model)
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
            f"precision {fields['precision']}, stored {fields['stored_dtype']}"
            + "".join(f", {name} {fields[name]!r}" for name in ("tower", "prompt", "dim") if name in fields) + ")"
        )
    raise FingerprintLookupError(
        f"{len(candidates)} sets of vectors of dataset {dataset!r} match {ref}; add the option that tells "
        f"them apart ({', '.join(map(option, ('layer', 'pool', 'precision', 'weights', 'prompt_text', 'dim')))} or "
        "@revision): " + "; ".join(described)
    )


def resolved_options(store: EmbeddingStore, fingerprint: str, options: LoadOptions) -> LoadOptions:
    """``options`` with the layer, pooling, precision, random weights, prompt, dim and tower the
    fingerprint was made with: a head records these, so ``predict`` rebuilds exactly that backbone even when the lookup
    that found the vectors left them unset (unset matches any value)."""
    from dataclasses import replace

    fields = store.fingerprints()[fingerprint]["fields"]
    tag = fields["weights"]
    weights = tag if tag.startswith("random:") else options.weights
    if tag.startswith("file-sha256:") and options.parsed_weights.kind != "file":
        raise FingerprintLookupError(f"the vectors of fingerprint {fingerprint} were made with a weights file "
                                     f"({tag}); pass it with {option('weights', 'PATH')} so that backbone can be rebuilt")
    return replace(options, layer=fields["layer"], pool=fields["pool"], precision=fields["precision"], weights=weights,
                   prompt=None, prompt_text=fields.get("prompt") or "", dim=fields.get("dim"), tower=fields.get("tower"))
