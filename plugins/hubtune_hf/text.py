"""hf text backbones: AutoTokenizer + AutoModel, honouring a sentence-transformers repo's own config.

A sentence-transformers repository says how its vectors are made: ``modules.json`` lists the
pipeline (Transformer -> Pooling -> Normalize), ``1_Pooling/config.json`` the pooling mode and
``sentence_bert_config.json`` the max sequence length and lower-casing. hubtune reproduces that
pipeline exactly (parity with ``SentenceTransformer.encode`` is tested) and refuses modules it does
not implement rather than silently producing different vectors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from hubtune.plugin import (
    TEXT_TOKENS, Backbone, BackboneOptionError, InputError, LayerPools, LoadOptions, ModelRef, Preprocessor, pool_tokens,
)
from hubtune_hf.common import (
    encoder_blocks, encoder_run, export_recipe, hidden_state_index, hidden_state_layers, load_model,
)

ST_POOL_MODES = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
}
ST_MODULES = {"Transformer", "Pooling", "Normalize"}


def read_sentence_transformers_config(folder: Path) -> dict[str, Any] | None:
    """The parts of a sentence-transformers config hubtune honours, or None for a plain model."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    kinds = [module["type"].rsplit(".", 1)[-1] for module in modules]
    unsupported = [kind for kind in kinds if kind not in ST_MODULES]
    if unsupported:
        raise BackboneOptionError(
            f"{folder.name}: sentence-transformers modules {unsupported} are not supported by hubtune yet "
            f"(supported: {sorted(ST_MODULES)})"
        )
    pool = None
    for module in modules:
        if module["type"].endswith("Pooling"):
            config = json.loads((folder / module["path"] / "config.json").read_text())
            modes = [name for key, name in ST_POOL_MODES.items() if config.get(key)]
            other = [k for k, v in config.items() if k.startswith("pooling_mode_") and v and k not in ST_POOL_MODES]
            if len(modes) != 1 or other:
                raise BackboneOptionError(
                    f"{folder.name}: pooling config {config} is not supported (one of cls, mean, max)"
                )
            pool = modes[0]
    bert_config_file = folder / "sentence_bert_config.json"
    bert_config = json.loads(bert_config_file.read_text()) if bert_config_file.is_file() else {}
    return {
        "pool": pool,
        "normalize": "Normalize" in kinds,
        "max_length": bert_config.get("max_seq_length"),
        "lowercase": bool(bert_config.get("do_lower_case", False)),
    }


class TokenizerPreprocessor(Preprocessor):
    """One text -> token ids; batches are padded to their longest member (right padding)."""

    def __init__(self, tokenizer: Any, max_length: int, lowercase: bool, strip: bool):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.lowercase = lowercase
        self.strip = strip
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _clean(self, item: Any) -> str:
        if isinstance(item, (bytes, bytearray)):
            try:
                item = bytes(item).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"text is not valid UTF-8: {exc}") from exc
        if not isinstance(item, str):
            raise InputError(f"expected text, got {type(item).__name__}")
        text = item.strip() if self.strip else item
        if not text.strip():
            raise InputError("empty text")
        return self._bounded(text.lower() if self.lowercase else text)

    def _bounded(self, text: str) -> str:
        """A long text cut, at a space, to a prefix that still yields more than ``max_length`` tokens.

        The truncated ids are the same (tokenisers split at spaces first), and a 10 MB text costs what
        a few kB cost instead of seconds of tokenising what truncation throws away.
        """
        budget = self.max_length * 16
        while budget < len(text):
            cut = text.rfind(" ", 0, budget)
            if cut > 0 and len(self.tokenizer(text[:cut], add_special_tokens=False)["input_ids"]) > self.max_length:
                return text[:cut]
            budget *= 4
        return text

    def _tensors(self, encoded: Any, index: int | None = None) -> dict:
        import torch

        keys = ("input_ids", "attention_mask", "token_type_ids")
        pick = (lambda v: v) if index is None else (lambda v: v[index])
        return {key: torch.tensor(pick(encoded[key])) for key in keys if key in encoded}

    def __call__(self, item: Any) -> dict:
        return self._tensors(self.tokenizer(self._clean(item), truncation=True, max_length=self.max_length))

    def prepare_many(self, items: Sequence[Any]) -> list:
        """One batched tokeniser call (several times faster than one call per text)."""
        results: list = [None] * len(items)
        texts, where = [], []
        for index, item in enumerate(items):
            try:
                texts.append(self._clean(item))
                where.append(index)
            except InputError as exc:
                results[index] = exc
        if texts:
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
            for row, index in enumerate(where):
                results[index] = self._tensors(encoded, row)
        return results

    def length(self, sample: dict) -> int:
        return len(sample["input_ids"])

    def collate(self, samples: Sequence[dict]) -> dict:
        from torch.nn.utils.rnn import pad_sequence

        return {key: pad_sequence([sample[key] for sample in samples], batch_first=True,
                                  padding_value=self.pad_id if key == "input_ids" else 0)
                for key in samples[0]}


class HFTextBackbone(Backbone):
    modality = "text"

    def __init__(self, *, normalize: bool, default_pool: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.normalize = normalize
        self.default_pool = default_pool  # a sentence-transformers repo's own pooling mode, else mean
        self.hidden_index: int | None = None

    def pools(self, layer: str) -> LayerPools:
        return TEXT_TOKENS.with_default(self.default_pool)

    def configure(self, layer: str, pool: str) -> None:
        self.hidden_index = hidden_state_index(layer)

    def export_recipe(self) -> dict[str, Any]:
        return export_recipe(self.model, self.pool, self.normalize) if self.layer == "last" else super().export_recipe()

    def probe_item(self) -> str:
        return "probe"

    def forward(self, batch: dict) -> "Any":
        import torch.nn.functional as F

        outputs = self.model(**batch, output_hidden_states=self.hidden_index is not None)
        hidden = outputs.last_hidden_state if self.hidden_index is None else outputs.hidden_states[self.hidden_index]
        vectors = pool_tokens(hidden, batch["attention_mask"], self.pool)  # (B, D)
        return F.normalize(vectors.float(), dim=-1) if self.normalize else vectors

    def blocks(self) -> Any:
        """Encoder models: ``embeddings`` -> the transformer layers -> pooling (+ normalisation)."""
        from hubtune.plugin import BlockSplit

        model = self.model
        named = encoder_blocks(model)
        if named is None or getattr(model.config, "is_decoder", False) or not hasattr(model, "embeddings"):
            return super().blocks()

        def stem(batch: dict) -> Any:
            hidden = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
            return hidden, batch["attention_mask"]  # (B, L, D), (B, L)

        def neck(hidden: Any, mask: Any) -> Any:
            import torch.nn.functional as F

            vectors = pool_tokens(hidden, mask, self.pool)  # (B, D)
            return F.normalize(vectors.float(), dim=-1) if self.normalize else vectors

        return BlockSplit(stem, named, encoder_run(model), neck, [], "last")


def build_text_backbone(ref: ModelRef, folder: Path, options: LoadOptions) -> HFTextBackbone:
    from transformers import AutoTokenizer

    st_config = read_sentence_transformers_config(folder)
    model = load_model(folder, options, f"hf:{ref.id}")
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=options.trust_remote_code)
    limits = [getattr(model.config, "max_position_embeddings", None), tokenizer.model_max_length]
    max_length = min(int(limit) for limit in limits if limit and limit < 1_000_000)
    if st_config and st_config["max_length"]:
        max_length = min(max_length, int(st_config["max_length"]))
    normalize = bool(st_config and st_config["normalize"])
    lowercase = bool(st_config and st_config["lowercase"])
    strip = st_config is not None  # sentence-transformers strips surrounding whitespace
    preprocess = {
        "tokenizer": type(tokenizer).__name__,
        "max_length": max_length,
        "lowercase": lowercase,
        "strip": strip,
        "padding": "right",
        "normalize": normalize,
    }
    return HFTextBackbone(
        ref=ref,
        revision=ref.revision,
        model=model,
        preprocessor=TokenizerPreprocessor(tokenizer, max_length, lowercase, strip),
        preprocess_config=preprocess,
        layers=hidden_state_layers(int(model.config.num_hidden_layers) + 1),
        options=options,
        normalize=normalize,
        default_pool=(st_config or {}).get("pool") or "mean",
    )
