"""hf text backbones: AutoTokenizer + AutoModel, reproducing a sentence-transformers repo's whole pipeline.

A sentence-transformers repository says how its vectors are made (``hubtune_hf.st_config`` reads it):
the Transformer's max sequence length and lower-casing, the pooling mode and ``include_prompt``, the
Dense and Normalize modules after pooling, and the prompts. hubtune reproduces that pipeline as
sentence-transformers 6.2 runs it (parity with ``SentenceTransformer.encode`` is tested) and refuses,
by name, what it does not implement rather than silently making other vectors. What it matches:

- texts are tokenised as given: no stripping of surrounding whitespace (sentence-transformers 6.2
  does not strip; a leading space is a token in byte-level vocabularies). A prompt is prepended as a
  plain string (``prompt + text``).
- padding is on the tokenizer's ``padding_side`` (left for decoder embedders such as Qwen3-Embedding),
  truncation at ``max_seq_length`` (else the tokenizer's limit), both capped at the model's positions.
- pooling: ``cls``, ``mean``, ``max``, ``mean_sqrt_len_tokens``, ``weightedmean``, ``lasttoken`` (and
  hubtune's ``gem``) with sentence-transformers' semantics (``hubtune_hf.standalone.pool_text``); with
  ``include_prompt: false`` the prompt's tokens (counted as sentence-transformers counts them) are not
  pooled.

One deliberate difference: an empty or whitespace-only text is refused (an ``InputError`` the
extractor records) where sentence-transformers would embed its special tokens alone, a vector that
says nothing about the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from hubtune.plugin import TEXT_TOKENS, Backbone, InputError, LayerPools, LoadOptions, ModelRef, Preprocessor, as_text
from hubtune_hf.common import LOADER, encoder_blocks, encoder_run, hidden_state_index, hidden_state_layers, load_model
from hubtune_hf.st_config import POOLING_MODES, Pipeline, read_pipeline


class TokenizerPreprocessor(Preprocessor):
    """One text -> token ids (``prompt + text``, truncated); batches are padded to their longest member
    on the tokenizer's side. Picklable: it runs in DataLoader workers."""

    def __init__(self, tokenizer: Any, max_length: int, padding_side: str = "right", truncation_side: str = "right",
                 pad_to_max_length: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        # every text padded to max_length up front: for text towers whose vector depends on the padding
        self.kwargs: dict[str, Any] = {"truncation": True, "max_length": max_length,
                                       **({"padding": "max_length"} if pad_to_max_length else {})}
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.prompt = ""  # put before every text (Backbone.apply_prompt sets it)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def _clean(self, item: Any) -> str:
        item = as_text(item)
        return self._bounded(self.prompt + item)

    def _bounded(self, text: str) -> str:
        """A long text cut, at a space, to a prefix that still yields more than ``max_length`` tokens.

        The truncated ids are the same (tokenisers split at spaces first), and a 10 MB text costs what
        a few kB cost instead of seconds of tokenising what truncation throws away. Only when the
        tokenizer truncates on the right (it keeps the start).
        """
        budget = self.max_length * 16
        while self.truncation_side == "right" and budget < len(text):
            cut = text.rfind(" ", 0, budget)
            if cut > 0 and len(self.tokenizer(text[:cut], add_special_tokens=False)["input_ids"]) > self.max_length:
                return text[:cut]
            budget *= 4
        return text

    def _tensors(self, encoded: Any, index: int | None = None) -> dict:
        import torch

        keys = ("input_ids", "attention_mask", "token_type_ids")
        return {key: torch.tensor(encoded[key] if index is None else encoded[key][index])
                for key in keys if key in encoded}

    def __call__(self, item: Any) -> dict:
        return self._tensors(self.tokenizer(self._clean(item), **self.kwargs))

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
            encoded = self.tokenizer(texts, **self.kwargs)
            for row, index in enumerate(where):
                results[index] = self._tensors(encoded, row)
        return results

    def length(self, sample: dict) -> int:
        return len(sample["input_ids"])

    def collate(self, samples: Sequence[dict]) -> dict:
        from torch.nn.utils.rnn import pad_sequence

        return {key: pad_sequence([sample[key] for sample in samples], batch_first=True,
                                  padding_value=self.pad_id if key == "input_ids" else 0,
                                  padding_side=self.padding_side)
                for key in samples[0]}


class HFTextBackbone(Backbone):
    modality = "text"

    def __init__(self, *, pipeline: Pipeline | None, steps: list[dict[str, Any]], **kwargs: Any):
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.steps = steps  # after pooling: what the export recipe records
        self.default_pool = pipeline.pool if pipeline else "mean"  # the repo's own pooling mode, else mean
        self.include_prompt = pipeline.include_prompt if pipeline else True
        self.default_prompt_name = pipeline.default_prompt_name if pipeline else None
        self.prompt_length = 0  # prompt tokens left out of pooling (include_prompt: false)
        self.hidden_index: int | None = None

    @property
    def after_pooling(self) -> Any:
        """The repository's Dense / Normalize modules (an empty ``Sequential`` for a plain model)."""
        from hubtune_hf.standalone import SENTENCE_HEAD

        return getattr(self.model, SENTENCE_HEAD)

    def pools(self, layer: str) -> LayerPools:
        names = [*TEXT_TOKENS.names, *(mode for mode in POOLING_MODES if mode not in TEXT_TOKENS.names)]
        if self.default_pool not in names:
            names.append(self.default_pool)  # several modes concatenated, as the repository pools
        return LayerPools(tuple(names), TEXT_TOKENS.aliases.get(self.default_pool, self.default_pool),
                          TEXT_TOKENS.aliases)

    def configure(self, layer: str, pool: str) -> None:
        self.hidden_index = hidden_state_index(layer)

    def prompts(self) -> dict[str, str]:
        return dict(self.pipeline.prompts) if self.pipeline else {}

    def apply_prompt(self, text: str | None) -> None:
        """Put ``text`` before every input from now on, as sentence-transformers does (``prompt + text``);
        with ``include_prompt: false`` its tokens, counted as sentence-transformers counts them, are not pooled."""
        from hubtune_hf.st_modules import prompt_length

        preprocessor = self.preprocessor
        assert isinstance(preprocessor, TokenizerPreprocessor)
        preprocessor.prompt = text or ""
        self.prompt_length = 0
        if text and not self.include_prompt:
            self.prompt_length = prompt_length(preprocessor.tokenizer, text, preprocessor.max_length)

    def export_recipe(self) -> dict[str, Any]:
        if self.layer != "last":
            return super().export_recipe()
        return {"library": "transformers", "loader": str(LOADER), "config": self.model.config.to_dict(),
                "pool": self.pool, "steps": self.steps, "prompt": self.prompt or "", "prompt_length": self.prompt_length}

    def probe_item(self) -> str:
        return "probe"

    def embed_tokens(self, hidden: Any, mask: Any) -> Any:
        """Token states -> the sentence vector: pooling, then the repository's Dense / Normalize modules."""
        from hubtune_hf.standalone import pool_text

        return self.after_pooling(pool_text(hidden, mask, str(self.pool), self.prompt_length))  # (B, D)

    def forward(self, batch: dict) -> "Any":
        outputs = self.model(**batch, output_hidden_states=self.hidden_index is not None)
        hidden = outputs.last_hidden_state if self.hidden_index is None else outputs.hidden_states[self.hidden_index]
        return self.embed_tokens(hidden, batch["attention_mask"])

    def blocks(self) -> Any:
        """Encoder models: ``embeddings`` -> the transformer layers -> pooling (+ Dense / normalisation)."""
        from hubtune.plugin import BlockSplit

        model = self.model
        named = encoder_blocks(model)
        right_padded = getattr(self.preprocessor, "padding_side", "right") == "right"  # cached activations pad right
        if named is None or getattr(model.config, "is_decoder", False) or not hasattr(model, "embeddings") \
                or not right_padded:
            return super().blocks()

        def stem(batch: dict) -> Any:
            hidden = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
            return hidden, batch["attention_mask"]  # (B, L, D), (B, L)

        head = [self.after_pooling] if any(True for _ in self.after_pooling.parameters()) else []
        return BlockSplit(stem, named, encoder_run(model), self.embed_tokens, head, "last")


def _max_length(model: Any, tokenizer: Any, pipeline: Pipeline | None) -> int:
    """``max_seq_length`` of a sentence-transformers repo, else the tokenizer's limit; at most the
    model's position count (beyond it an absolute-position model has no embedding)."""
    limits = [getattr(model.config, "max_position_embeddings", None)]
    if pipeline is not None and pipeline.max_seq_length:
        limits.append(pipeline.max_seq_length)
    else:
        limits.append(tokenizer.model_max_length)
    usable = [int(limit) for limit in limits if limit and 0 < limit < 1_000_000]
    return min(usable) if usable else 512


def build_text_backbone(ref: ModelRef, folder: Path, options: LoadOptions) -> HFTextBackbone:
    from transformers import AutoTokenizer

    from hubtune_hf.standalone import SENTENCE_HEAD
    from hubtune_hf.st_modules import lower_case, sentence_head, step_specs

    what = f"hf:{ref.id}"
    pipeline = read_pipeline(folder, what)
    model_folder = folder / pipeline.transformer_path if pipeline else folder
    model = load_model(model_folder, options, what)
    if hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # no KV cache: embedding is one forward (as sentence-transformers)
    tokenizer = AutoTokenizer.from_pretrained(str(model_folder), trust_remote_code=options.trust_remote_code,
                                              **(pipeline.processor_kwargs if pipeline else {}))
    if pipeline and pipeline.lowercase:
        lower_case(tokenizer)
    model.add_module(SENTENCE_HEAD, sentence_head(folder, pipeline, what))
    max_length = _max_length(model, tokenizer, pipeline)
    steps = step_specs(pipeline)
    padding = getattr(tokenizer, "padding_side", "right") or "right"
    truncation = getattr(tokenizer, "truncation_side", "right") or "right"
    preprocess: dict[str, Any] = {
        "tokenizer": type(tokenizer).__name__,
        "max_length": max_length,
        "lowercase": bool(pipeline and pipeline.lowercase),
        "strip": False,
        "padding": padding,
        "normalize": bool(pipeline and pipeline.normalize),
    }
    # recorded only where they apply, so every other model's fingerprint stays what it was
    if truncation != "right":
        preprocess["truncation"] = truncation
    if pipeline and not pipeline.include_prompt:
        preprocess["include_prompt"] = False
    if any(step["kind"] != "normalize" for step in steps):
        preprocess["after_pooling"] = steps
    return HFTextBackbone(
        ref=ref,
        revision=ref.revision,
        model=model,
        preprocessor=TokenizerPreprocessor(tokenizer, max_length, padding, truncation),
        preprocess_config=preprocess,
        layers=hidden_state_layers(int(model.config.num_hidden_layers) + 1),
        options=options,
        pipeline=pipeline,
        steps=steps,
    )
