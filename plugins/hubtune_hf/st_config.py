"""A sentence-transformers repository's pipeline, read from its config files (JSON only: no torch, no code).

What decides a sentence-transformers vector, as sentence-transformers 6.2 loads it:

- ``modules.json``: the modules in order. hubtune implements ``Transformer`` (first, once),
  ``Pooling`` (once, right after it), then any sequence of ``Dense``, ``Normalize`` and ``Dropout``
  (a no-op at inference). Every other module (``Router``/``Asym``, ``StaticEmbedding``, ``CNN``,
  ``LSTM``, ``LayerNorm``, ``WordEmbeddings``, ``WeightedLayerPooling``, ``CLIPModel``, a repository's
  own Python class...) is refused by name, never approximated.
- the Transformer's ``sentence_bert_config.json``: ``max_seq_length`` and ``do_lower_case`` (honoured);
  ``transformer_task`` other than feature extraction, a ``modality_config`` other than plain text
  (a chat-template ``message`` format), ``processing_kwargs``, ``query_length``/``document_length``/
  ``query_expansion`` and unknown loading arguments are refused by name.
- ``1_Pooling/config.json``: ``pooling_mode`` (or the legacy ``pooling_mode_*_tokens`` flags, read as
  sentence-transformers reads them: several flags concatenate, none means ``mean``) and
  ``include_prompt``.
- each ``Dense`` folder's ``config.json`` (``in_features``, ``out_features``, ``bias``,
  ``activation_function``, ``use_residual``); a missing ``activation_function`` is ``Tanh``, as in
  sentence-transformers. The activation is looked up by name in :data:`ACTIVATIONS`; nothing named
  by a repository is ever imported.
- ``config_sentence_transformers.json``: ``prompts``, ``default_prompt_name`` and ``model_type``
  (only ``SentenceTransformer``: a SparseEncoder or CrossEncoder repository is refused).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubtune.plugin import BackboneOptionError

#: ``pooling_mode`` values, in the order sentence-transformers concatenates the legacy flags
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
LEGACY_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
POOLING_KEYS = {"embedding_dimension", "word_embedding_dimension", "pooling_mode", "include_prompt"}
#: the activation names a Dense config may give (``torch.nn.X``, ``torch.nn.modules.activation.X`` or
#: ``torch.nn.modules.linear.Identity``) -> the ``torch.nn`` class built, with its default arguments
ACTIVATIONS = ("Identity", "Tanh", "ReLU", "GELU", "Sigmoid", "SiLU", "Softplus", "LeakyReLU", "ELU", "Mish")
SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize", "Dropout")
#: modules hubtune knows and does not implement, with why
REFUSED_MODULES = {
    "Router": "routes queries and documents to different sub-modules",
    "Asym": "routes queries and documents to different sub-modules (the old name of Router)",
    "StaticEmbedding": "a static embedding table, not a transformers model",
    "CLIPModel": "an image-text model",
}
#: Transformer loading arguments whose effect on the vector hubtune reproduces, or that have none
MODEL_KWARGS = {"torch_dtype", "dtype", "attn_implementation", "low_cpu_mem_usage", "trust_remote_code"}
PROCESSOR_KWARGS = {"padding_side", "truncation_side", "model_max_length", "use_fast", "trust_remote_code"}
CONFIG_KWARGS = {"use_cache", "trust_remote_code"}
TEXT_ONLY = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
UNSET_TRANSFORMER_KEYS = ("processing_kwargs", "query_length", "document_length", "query_expansion")


@dataclass(frozen=True)
class DenseSpec:
    """One ``Dense`` module: ``activation(linear(x))`` (+ ``x`` or ``residual(x)`` with ``use_residual``)."""

    path: str  # its folder in the repository (``2_Dense``): config.json + model.safetensors
    in_features: int
    out_features: int
    bias: bool
    activation: str  # one of ACTIVATIONS
    residual: bool = False

    def describe(self) -> dict[str, Any]:
        """What the fingerprint and the export recipe record."""
        return {"kind": "dense", "in": self.in_features, "out": self.out_features, "bias": self.bias,
                "activation": self.activation, "residual": self.residual}


@dataclass(frozen=True)
class Pipeline:
    """What a sentence-transformers repository says about how its vectors are made."""

    transformer_path: str = ""
    pool: str = "mean"  # hubtune's name: one of POOLING_MODES, or several joined with "+"
    include_prompt: bool = True
    steps: tuple[DenseSpec | str, ...] = ()  # after pooling, in order: DenseSpec or "normalize"
    max_seq_length: int | None = None
    lowercase: bool = False
    processor_kwargs: dict[str, Any] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    @property
    def normalize(self) -> bool:
        return "normalize" in self.steps


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackboneOptionError(f"{what}: {path.name} is not readable JSON ({exc})") from exc


def _kind(entry: Any, what: str) -> str:
    """The module's class name from its ``type``; only sentence-transformers' own classes are taken."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str) or not isinstance(entry.get("path"), str):
        raise BackboneOptionError(f"{what}: modules.json entry {entry!r} has no type and path")
    dotted = entry["type"]
    kind = dotted.rsplit(".", 1)[-1]
    if not dotted.startswith("sentence_transformers."):
        raise BackboneOptionError(
            f"{what}: modules.json names the repository's own module {dotted!r} (Python code that "
            "sentence-transformers only runs with trust_remote_code); hubtune does not implement it")
    if kind in REFUSED_MODULES:
        raise BackboneOptionError(f"{what}: the sentence-transformers module {kind} ({REFUSED_MODULES[kind]}) is not "
                                  f"supported by hubtune; supported: {', '.join(SUPPORTED_MODULES)}")
    if kind not in SUPPORTED_MODULES:
        raise BackboneOptionError(f"{what}: the sentence-transformers module {kind} ({dotted}) is not supported by "
                                  f"hubtune; supported: {', '.join(SUPPORTED_MODULES)}")
    path = Path(entry["path"])
    if path.is_absolute() or ".." in path.parts:
        raise BackboneOptionError(f"{what}: modules.json path {entry['path']!r} leaves the repository")
    return kind


def read_pooling(config: dict[str, Any], what: str) -> tuple[str, bool]:
    """``(pool, include_prompt)`` from a Pooling config, read as sentence-transformers 6.2 reads it."""
    unknown = sorted(set(config) - POOLING_KEYS - set(LEGACY_FLAGS))
    if unknown:
        raise BackboneOptionError(f"{what}: Pooling config keys {unknown} are not known to hubtune (nor to "
                                  f"sentence-transformers 6.2); known: {sorted(POOLING_KEYS | set(LEGACY_FLAGS))}")
    mode = config.get("pooling_mode")
    if mode is None:
        flags = [name for key, name in LEGACY_FLAGS.items() if config.get(key)]
        mode = flags or ["mean"]  # no flag set: sentence-transformers' default, mean
    modes = [mode] if isinstance(mode, str) else list(mode) if isinstance(mode, (list, tuple)) else [repr(mode)]
    wrong = [m for m in modes if m not in POOLING_MODES]
    if wrong or not modes:
        raise BackboneOptionError(f"{what}: pooling mode {wrong or modes} is not one of {', '.join(POOLING_MODES)}")
    include = config.get("include_prompt", True)
    if not isinstance(include, bool):
        raise BackboneOptionError(f"{what}: Pooling include_prompt must be true or false, not {include!r}")
    return "+".join(modes), include


def activation_name(value: Any, what: str) -> str:
    """``torch.nn.modules.activation.Tanh`` -> ``Tanh``; anything not in :data:`ACTIVATIONS` is refused."""
    known = {f"torch.nn.{name}": name for name in ACTIVATIONS}
    known.update({f"torch.nn.modules.activation.{name}": name for name in ACTIVATIONS if name != "Identity"})
    known["torch.nn.modules.linear.Identity"] = "Identity"
    name = known.get(value) if isinstance(value, str) else None
    if name is None:
        raise BackboneOptionError(f"{what}: Dense activation_function {value!r} is not supported by hubtune; "
                                  f"supported: torch.nn.{{{', '.join(ACTIVATIONS)}}}")
    return name


def read_dense(folder: Path, path: str, what: str) -> DenseSpec:
    config_file = folder / path / "config.json"
    if not config_file.is_file():
        raise BackboneOptionError(f"{what}: Dense module {path!r} has no config.json")
    config = _json(config_file, what)
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            raise BackboneOptionError(f"{what}: Dense {key}={config[key]!r} is not supported (only sentence_embedding)")
    try:
        in_features, out_features = int(config["in_features"]), int(config["out_features"])
    except (KeyError, TypeError, ValueError) as exc:
        raise BackboneOptionError(f"{what}: Dense config {path}/config.json lacks in_features/out_features") from exc
    activation = activation_name(config.get("activation_function", "torch.nn.modules.activation.Tanh"), what)
    return DenseSpec(path, in_features, out_features, bool(config.get("bias", True)), activation,
                     bool(config.get("use_residual", False)))


def _checked_kwargs(config: dict[str, Any], names: tuple[str, ...], allowed: set[str], what: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in names:
        value = config.get(name) or {}
        if not isinstance(value, dict):
            raise BackboneOptionError(f"{what}: sentence_bert_config.json {name} is not an object")
        found.update(value)
    unknown = sorted(set(found) - allowed)
    if unknown:
        raise BackboneOptionError(f"{what}: sentence_bert_config.json {'/'.join(names)} {unknown} are not supported by "
                                  f"hubtune (it honours {sorted(allowed - {'trust_remote_code'})})")
    found.pop("trust_remote_code", None)  # sentence-transformers drops it too: a config cannot ask for code
    return found


def read_transformer(folder: Path, what: str) -> dict[str, Any]:
    """The Transformer module's settings from its ``sentence_bert_config.json`` (or a legacy name)."""
    names = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
             "sentence_camembert_config.json", "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
             "sentence_xlnet_config.json")
    config_file = next((folder / name for name in names if (folder / name).is_file()), None)
    config = _json(config_file, what) if config_file else {}
    if config.get("transformer_task", "feature-extraction") != "feature-extraction":
        raise BackboneOptionError(f"{what}: transformer_task {config['transformer_task']!r} is not supported "
                                  "(hubtune embeds with feature-extraction models)")
    if config.get("modality_config", TEXT_ONLY) != TEXT_ONLY or config.get("module_output_name",
                                                                           "token_embeddings") != "token_embeddings":
        raise BackboneOptionError(f"{what}: modality_config {config.get('modality_config')} is not supported (only "
                                  f"{TEXT_ONLY}: a 'message' entry renders texts through a chat template)")
    for key in UNSET_TRANSFORMER_KEYS:
        if config.get(key):
            raise BackboneOptionError(f"{what}: sentence_bert_config.json {key}={config[key]!r} is not supported")
    max_seq = config.get("max_seq_length")
    processor = _checked_kwargs(config, ("tokenizer_args", "processor_kwargs"), PROCESSOR_KWARGS, what)
    if "model_max_length" in processor:  # wins over max_seq_length, as in sentence-transformers
        max_seq = processor.pop("model_max_length")
    # the model's dtype is --precision's to decide, the attention kernel computes the same function, and
    # the KV cache is off (as in sentence-transformers): these change nothing hubtune's vectors depend on
    _checked_kwargs(config, ("model_args", "model_kwargs"), MODEL_KWARGS, what)
    _checked_kwargs(config, ("config_args", "config_kwargs"), CONFIG_KWARGS, what)
    return {"max_seq_length": int(max_seq) if max_seq else None, "lowercase": bool(config.get("do_lower_case", False)),
            "processor_kwargs": processor}


def read_prompts(folder: Path, what: str) -> tuple[dict[str, str], str | None]:
    """``prompts`` and ``default_prompt_name`` from ``config_sentence_transformers.json``."""
    config_file = folder / "config_sentence_transformers.json"
    config = _json(config_file, what) if config_file.is_file() else {}
    model_type = config.get("model_type", "SentenceTransformer")
    if model_type != "SentenceTransformer":
        raise BackboneOptionError(f"{what}: a sentence-transformers {model_type} repository; hubtune embeds "
                                  "SentenceTransformer (dense) repositories")
    raw = config.get("prompts") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, (str, type(None))) for v in raw.values()):
        raise BackboneOptionError(f"{what}: config_sentence_transformers.json prompts is not a name -> text object")
    prompts = {str(name): text or "" for name, text in raw.items()}  # None is "" there too
    default = config.get("default_prompt_name")
    if default is not None and default not in prompts:
        if default not in ("query", "document"):  # sentence-transformers always has these two, empty
            raise BackboneOptionError(f"{what}: default_prompt_name {default!r} is not among its prompts "
                                      f"{sorted(prompts)}")
        default = None  # an empty prompt: none
    return prompts, default


def read_pipeline(folder: Path, what: str) -> Pipeline | None:
    """The repository's pipeline, or None for a plain transformers repository (no ``modules.json``)."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _json(modules_file, what)
    if not isinstance(modules, list) or not modules:
        raise BackboneOptionError(f"{what}: modules.json is not a list of modules")
    kinds = [_kind(entry, what) for entry in modules]
    if kinds[0] != "Transformer" or kinds.count("Transformer") != 1 or kinds[1:2] != ["Pooling"] \
            or kinds.count("Pooling") != 1:
        raise BackboneOptionError(f"{what}: modules {kinds} are not Transformer, Pooling, then Dense/Normalize "
                                  "modules; hubtune implements only that order")
    transformer_path = modules[0]["path"]
    settings = read_transformer(folder / transformer_path, what)
    pooling_file = folder / modules[1]["path"] / "config.json"
    pool, include_prompt = read_pooling(_json(pooling_file, what) if pooling_file.is_file() else {}, what)
    steps: list[DenseSpec | str] = []
    for kind, entry in zip(kinds[2:], modules[2:]):
        if kind == "Dense":
            steps.append(read_dense(folder, entry["path"], what))
        elif kind == "Normalize":
            config_file = folder / entry["path"] / "config.json"
            config = _json(config_file, what) if entry["path"] and config_file.is_file() else {}
            if any(config.get(key) not in (None, "sentence_embedding")
                   for key in ("module_input_name", "module_output_name")):
                raise BackboneOptionError(f"{what}: Normalize config {config} is not supported (only sentence_embedding)")
            steps.append("normalize")
    prompts, default = read_prompts(folder, what)
    return Pipeline(transformer_path, pool, include_prompt, tuple(steps), settings["max_seq_length"],
                    settings["lowercase"], settings["processor_kwargs"], prompts, default)
