"""The pieces of a sentence-transformers pipeline that need torch or the tokenizer: the modules after
pooling with their weights, lower-casing and a prompt's token count, each as sentence-transformers
6.2 does it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubtune.plugin import BackboneOptionError, UnsafeModelError
from hubtune_hf.st_config import DenseSpec, Pipeline

if TYPE_CHECKING:
    import torch


def step_specs(pipeline: Pipeline | None) -> list[dict[str, Any]]:
    """The modules after pooling as the export recipe and the fingerprint record them."""
    steps = pipeline.steps if pipeline else ()
    return [step.describe() if isinstance(step, DenseSpec) else {"kind": step} for step in steps]


def _dense_state(folder: Path, spec: DenseSpec, what: str) -> dict[str, "torch.Tensor"]:
    from safetensors.torch import load_file

    weights = folder / spec.path / "model.safetensors"
    if not weights.is_file():
        pickled = [name for name in ("pytorch_model.bin", "model.bin") if (folder / spec.path / name).is_file()]
        raise UnsafeModelError(
            f"{what}: Dense module {spec.path!r} has " + (f"only a pickled checkpoint ({pickled[0]}); hubtune does "
                                                          "not unpickle: convert it to model.safetensors"
                                                          if pickled else "no model.safetensors"))
    return load_file(str(weights), device="cpu")


def sentence_head(folder: Path, pipeline: Pipeline | None, what: str) -> "torch.nn.Sequential":
    """The Dense / Normalize modules after pooling, with each Dense's weights from its folder's
    ``model.safetensors`` (loaded strictly: a missing or extra tensor is an error)."""
    from hubtune_hf import standalone

    specs = step_specs(pipeline)
    head = standalone.sentence_head(specs)
    dense = [step for step in (pipeline.steps if pipeline else ()) if isinstance(step, DenseSpec)]
    modules = [module for module in head if isinstance(module, standalone.Dense)]
    for spec, module in zip(dense, modules):
        state = _dense_state(folder, spec, what)
        expected = module.state_dict()
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        if set(state) != set(expected) or any(shapes[k] != tuple(expected[k].shape) for k in expected):
            raise BackboneOptionError(
                f"{what}: Dense module {spec.path!r}: its weights {shapes} do not fit its config "
                f"({spec.in_features} -> {spec.out_features}, bias={spec.bias}, residual={spec.residual})")
        module.load_state_dict(state)
    return head.float()


def has_lowercase(normalizer: Any) -> bool:
    """Whether the normaliser (or, one level down, a sequence of them) is a Lowercase, as sentence-transformers checks."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    parts: Any = normalizer  # a Sequence iterates over its normalisers (the stubs do not say so)
    if isinstance(normalizer, NormalizerSequence):
        return any(isinstance(part, Lowercase) for part in parts)
    return isinstance(normalizer, Lowercase)


def lower_case(tokenizer: Any) -> None:
    """``do_lower_case`` as sentence-transformers does it: a Lowercase normaliser put first in the fast
    tokenizer, so the prompt is lower-cased with the text and added special tokens are left alone."""
    from tokenizers.normalizers import Lowercase
    from tokenizers.normalizers import Sequence as NormalizerSequence

    if not getattr(tokenizer, "is_fast", False):
        try:
            tokenizer.do_lower_case = True
        except AttributeError:
            tokenizer.basic_tokenizer.do_lower_case = True
        return
    normalizer: Any = tokenizer.backend_tokenizer.normalizer
    if has_lowercase(normalizer):
        return
    parts: list[Any] = [Lowercase()]
    if isinstance(normalizer, NormalizerSequence):
        parts += [normalizer[index] for index in range(len(normalizer))]
    elif normalizer is not None:
        parts.append(normalizer)
    tokenizer.backend_tokenizer.normalizer = NormalizerSequence(parts)


def prompt_length(tokenizer: Any, prompt: str, max_length: int) -> int:
    """The prompt's tokens, as sentence-transformers counts them to leave them out of pooling: the
    prompt tokenised alone (special tokens included), less a trailing special token (EOS, SEP)."""
    ids = tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return len(ids) - 1 if ids and ids[-1] in special else len(ids)
