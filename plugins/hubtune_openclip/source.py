"""The ``open_clip`` source: references, fetching, building the two-tower model.

References:

- ``open_clip:ARCH@TAG`` — a row of open_clip's pretrained table (``open_clip.list_pretrained()``); the
  tag's weights are fetched from its Hugging Face Hub repository as safetensors, through
  :func:`hubtune.hfhub.snapshot` (so offline mode and the safe-file policy hold). ``@TAG/REV`` pins the
  Hub revision of those weights; what was loaded is reported as ``ARCH@TAG/COMMIT``.
- ``open_clip:hf-hub:ORG/NAME[@REV]`` — a Hub repository with ``open_clip_config.json`` and
  ``open_clip_model.safetensors`` (plus tokenizer files when its config names a Hugging Face tokenizer).
- ``open_clip:ARCH`` — the architecture alone, for ``--weights random[:SEED]`` or ``--weights PATH``.

A pickled checkpoint (``open_clip_pytorch_model.bin``, a URL's ``.pt``) is never loaded: a tag or a
repository without safetensors weights is refused with :class:`UnsafeModelError`. open_clip itself is
an optional dependency, imported only when a model is listed or loaded.
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from hubtune.hfhub import hub_cache_dir, snapshot
from hubtune.plugin import (
    BackboneOptionError, HubtuneError, LoadOptions, ModelInfo, ModelNotFoundError, ModelRef, PullResult, Source,
    UnsafeModelError, load_weights_into,
)
from hubtune.refs import HF_HUB_PREFIX

logger = logging.getLogger("hubtune")

INSTALL_HINT = "pip install 'hubtune[openclip]'"
CONFIG_NAME = "open_clip_config.json"
#: the safetensors files open_clip looks for in a Hub repository, in its order of preference
WEIGHTS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors")
#: everything else a repository's model needs: configs and tokenizer vocabularies (no code, no weights)
TOKENIZER_PATTERNS = ("*.json", "*.txt", "*.model", "*.tiktoken")
DEFAULT_WEIGHTS = "open_clip_pytorch_model.bin"  # what a tag's ``hf_hub`` 'org/name/' means in open_clip


class OpenClipMissingError(HubtuneError, ImportError):
    """open_clip_torch is not installed (the ``openclip`` extra)."""

    exit_code = 2


def require_open_clip() -> Any:
    """The ``open_clip`` module, or a clear error naming the extra to install."""
    try:
        import open_clip
    except ImportError as exc:
        raise OpenClipMissingError(
            f"the open_clip source needs open_clip_torch, which is not installed ({exc}); {INSTALL_HINT}"
        ) from exc
    return open_clip


def safe_weights_name(filename: str) -> str:
    """The safetensors file open_clip prefers over a tag's ``filename`` (``x.bin`` -> ``x.safetensors``)."""
    if not filename or filename == DEFAULT_WEIGHTS:
        return WEIGHTS_NAMES[0]
    stem, dot, suffix = filename.rpartition(".")
    return f"{stem}.safetensors" if dot and suffix in ("bin", "pth", "pt") else filename


@dataclass(frozen=True)
class Target:
    """What a reference names."""

    arch: str | None  # an architecture of open_clip's table; None when the config is a Hub repository's
    repo: str | None  # the Hub repository of the weights (and, for hf-hub:, of the config)
    tag: str | None  # the canonical pretrained tag of ARCH@TAG
    revision: str | None  # the Hub revision asked for
    weights_file: str | None = None  # the safetensors file of a tag's weights
    quick_gelu: bool = False  # the tag's weights were trained with QuickGELU
    preprocess: dict | None = None  # the tag's preprocessing (mean, std, interpolation, resize mode)


def resolve_target(oc: Any, ref: ModelRef) -> Target:
    """Check a reference against open_clip's tables; the error lists what is valid."""
    if ref.id.startswith(HF_HUB_PREFIX):
        return Target(arch=None, repo=ref.id[len(HF_HUB_PREFIX):], tag=None, revision=ref.revision)
    arch = ref.id
    if oc.get_model_config(arch) is None:
        close = difflib.get_close_matches(arch, oc.list_models(), n=5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFoundError(f"open_clip has no architecture {arch!r}{hint} (`hubtune models --source open_clip`)")
    refuse_coca(oc.get_model_config(arch), f"open_clip:{arch}")
    if ref.revision is None:
        return Target(arch=arch, repo=None, tag=None, revision=None)
    tag, _, revision = ref.revision.partition("/")  # tags have no '/': ARCH@TAG/REV pins the Hub revision
    cfg = oc.get_pretrained_cfg(arch, tag)
    if not cfg:
        tags = oc.list_pretrained_tags_by_model(arch)
        offered = ", ".join(tags) if tags else "none (use --weights random or --weights PATH)"
        raise ModelNotFoundError(f"open_clip:{arch} has no pretrained tag {tag!r}; its tags: {offered}")
    canonical = next(t for t in oc.list_pretrained_tags_by_model(arch) if oc.get_pretrained_cfg(arch, t) is cfg)
    if not cfg.get("hf_hub"):
        raise UnsafeModelError(
            f"open_clip:{arch}@{canonical} has no Hugging Face Hub source, only a download URL of a pickled "
            "checkpoint, which hubtune does not load; convert it to safetensors and use --weights PATH"
        )
    repo, filename = posixpath.split(cfg["hf_hub"].strip())
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if cfg.get(k) is not None}
    return Target(arch=arch, repo=repo, tag=canonical, revision=revision or None,
                  weights_file=safe_weights_name(filename), quick_gelu=bool(cfg.get("quick_gelu")),
                  preprocess=preprocess)


def refuse_coca(model_cfg: dict | None, what: str) -> None:
    if model_cfg and "multimodal_cfg" in model_cfg:
        raise ModelNotFoundError(f"{what} is a CoCa (captioning) model, which the open_clip source does not embed "
                                 "with; pick a CLIP or SigLIP model (`hubtune models --source open_clip`)")


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """Drop open_clip's 'No pretrained weights loaded' warning: the weights are loaded right after."""
    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def create_architecture(oc: Any, name: str, what: str, **kwargs: Any) -> Any:
    """``open_clip.create_model(name)`` without any weights (they are loaded by the caller, from safetensors)."""
    try:
        with _quiet_random_init():
            return oc.create_model(name, pretrained=None, load_weights=False, pretrained_text=False, **kwargs)
    except HubtuneError:
        raise
    except Exception as exc:
        raise ModelNotFoundError(f"open_clip could not build {what}: {type(exc).__name__}: {exc}") from exc


def load_safetensors(oc: Any, model: Any, path: Path, what: str) -> None:
    """open_clip's own ``load_checkpoint`` (strict, with its state-dict fixes) of a safetensors file."""
    try:
        oc.load_checkpoint(model, str(path))
    except Exception as exc:
        raise BackboneOptionError(f"{what}: {path.name} does not fit the architecture: {exc}") from exc


@dataclass
class Built:
    """A loaded two-tower model and what both towers' backbones need."""

    model: Any  # open_clip's CLIP / CustomTextCLIP
    ref: ModelRef  # what was loaded, as a reference that loads it again
    revision: str | None  # the fingerprint's revision
    tokenizer: Any
    transform: Any  # the image tower's preprocessing (open_clip's validation transform)
    image_config: dict
    text_config: dict


class OpenClipSource(Source):
    name = "open_clip"
    modalities = ("image", "text")

    def list_models(self, pattern: str | None = None) -> Iterable[ModelInfo]:
        try:
            oc = require_open_clip()
        except OpenClipMissingError as exc:
            logger.warning("%s", exc)
            return
        for arch, tag in oc.list_pretrained():
            model_id = f"{arch}@{tag}"
            ref = f"{self.name}:{model_id}"
            if pattern is not None and not any(fnmatch.fnmatch(text, pattern) for text in (model_id, ref, arch)):
                continue
            if "multimodal_cfg" not in (oc.get_model_config(arch) or {}):  # CoCa: not embedded with (yet)
                yield ModelInfo(ref=ref, source=self.name, modality="image+text")  # two towers, as the hf source lists them

    # -- fetching ----------------------------------------------------------------------------------------
    def _hub_repo(self, target: Target, ref: ModelRef, options: LoadOptions, weights: bool) -> tuple[Path, str]:
        """An ``hf-hub:`` repository's snapshot: config and tokenizer files, and the weights if asked."""
        assert target.repo is not None
        patterns = [CONFIG_NAME, *TOKENIZER_PATTERNS, *(WEIGHTS_NAMES if weights else ())]
        folder, commit = snapshot(target.repo, target.revision, offline=options.offline, allow_patterns=patterns,
                                  asked=str(ref))
        if not (folder / CONFIG_NAME).is_file():
            raise ModelNotFoundError(f"{ref}: the repository has no {CONFIG_NAME}, so it is not an open_clip model "
                                     "(a transformers CLIP loads as hf:ORG/NAME)")
        return folder, commit

    def _repo_weights(self, folder: Path, ref: ModelRef) -> Path:
        for name in WEIGHTS_NAMES:
            if (folder / name).is_file():
                return folder / name
        raise UnsafeModelError(
            f"{ref} has no {' or '.join(WEIGHTS_NAMES)}; hubtune does not unpickle open_clip_pytorch_model.bin "
            "checkpoints. Convert them to safetensors, or load a converted file with --weights PATH."
        )

    def _tag_weights(self, target: Target, ref: ModelRef, options: LoadOptions) -> tuple[Path, str]:
        """The safetensors weights of ARCH@TAG from the tag's Hub repository; ``(file, commit)``."""
        assert target.repo is not None and target.weights_file is not None
        folder, commit = snapshot(target.repo, target.revision, offline=options.offline,
                                  allow_patterns=[target.weights_file], asked=str(ref),
                                  instead=f"; or, without pretrained weights, open_clip:{target.arch} --weights random")
        path = folder / target.weights_file
        if not path.is_file():
            raise UnsafeModelError(
                f"open_clip:{target.arch}@{target.tag}: {target.repo} has no {target.weights_file} (its weights are a "
                "pickled checkpoint, which hubtune does not load); pick another tag, or convert the checkpoint to "
                f"safetensors and load it with open_clip:{target.arch} --weights PATH"
            )
        return path, commit

    def _prefetch_hf_parts(self, model_cfg: dict, options: LoadOptions, tokenizer: bool) -> dict[str, str]:
        """Hub repositories a config names for its text tower (config) and tokenizer, through the safe snapshot
        (configs and vocabularies only); their commits by role."""
        text_cfg = model_cfg.get("text_cfg", {})
        wanted = {"text_model": text_cfg.get("hf_model_name")}
        if tokenizer:
            wanted["tokenizer"] = text_cfg.get("hf_tokenizer_name")
        commits = {}
        for role, repo in wanted.items():
            if repo:
                _, commits[role] = snapshot(repo, None, offline=options.offline, allow_patterns=TOKENIZER_PATTERNS,
                                            asked=f"hf:{repo}")
        return commits

    def pull(self, ref: ModelRef, options: LoadOptions) -> PullResult:
        oc = require_open_clip()
        target = resolve_target(oc, ref)
        if target.arch is None:
            folder, commit = self._hub_repo(target, ref, options, weights=True)
            self._repo_weights(folder, ref)
            return PullResult(ref=f"{self.name}:{ref.id}@{commit}", revision=commit, path=str(folder))
        if target.tag is None:
            raise self._no_tag(oc, target.arch)
        path, commit = self._tag_weights(target, ref, options)
        self._prefetch_hf_parts(oc.get_model_config(target.arch), options, tokenizer=True)
        revision = f"{target.tag}/{commit}"
        return PullResult(ref=f"{self.name}:{target.arch}@{revision}", revision=revision, path=str(path.parent))

    def _no_tag(self, oc: Any, arch: str) -> ModelNotFoundError:
        tags = oc.list_pretrained_tags_by_model(arch)
        if not tags:
            return ModelNotFoundError(f"open_clip:{arch} has no pretrained weights in open_clip's table; use "
                                      "--weights random or --weights PATH.safetensors")
        return ModelNotFoundError(f"open_clip:{arch} names an architecture; name its pretrained weights too, e.g. "
                                  f"open_clip:{arch}@{tags[0]} (its tags: {', '.join(tags)}), or use --weights random "
                                  "or --weights PATH.safetensors")

    # -- building ---------------------------------------------------------------------------------------
    def build(self, ref: ModelRef, options: LoadOptions) -> Built:
        """The model, its tokenizer and transform, and the revision to record."""
        import torch

        oc = require_open_clip()
        weights = options.parsed_weights  # validates --weights default|random[:SEED]|PATH.safetensors
        target = resolve_target(oc, ref)
        what = f"{self.name}:{ref.id}"
        if target.tag is not None and weights.kind != "default":
            raise BackboneOptionError(f"{ref}: @{ref.revision} names pretrained weights; drop it with "
                                      f"--weights {options.weights}")
        torch.manual_seed(weights.seed if weights.kind == "random" else 0)
        tokenizer_revision = None
        if target.arch is None:  # hf-hub: the repository's config (and weights), tokenizer files beside them
            folder, commit = self._hub_repo(target, ref, options, weights=weights.kind == "default")
            location = f"local-dir:{folder}"
            model_cfg = oc.get_model_config(location)
            refuse_coca(model_cfg, what)
            self._prefetch_hf_parts(model_cfg, options, tokenizer=False)
            model = create_architecture(oc, location, what)
            if weights.kind == "default":
                load_safetensors(oc, model, self._repo_weights(folder, ref), what)
            tokenizer = make_tokenizer(oc, location, what)
            loaded, revision = ModelRef(self.name, ref.id, commit), commit
        else:
            model_cfg = oc.get_model_config(target.arch)
            if target.tag is None and weights.kind == "default":
                raise self._no_tag(oc, target.arch)
            fetched = self._tag_weights(target, ref, options) if target.tag is not None else None
            tokenizer_revision = self._prefetch_hf_parts(model_cfg, options, tokenizer=True).get("tokenizer")
            if fetched is not None:
                from open_clip.transform import merge_preprocess_dict

                path, commit = fetched
                model = create_architecture(oc, target.arch, what, force_quick_gelu=target.quick_gelu,
                                            force_preprocess_cfg=merge_preprocess_dict({}, target.preprocess or {}))
                load_safetensors(oc, model, path, f"open_clip:{target.arch}@{target.tag}")
                revision = f"{target.tag}/{commit}"
            else:
                model, revision = create_architecture(oc, target.arch, what), None
            tokenizer = make_tokenizer(oc, target.arch, what, tokenizer_revision)
            loaded = ModelRef(self.name, target.arch, revision)
        if weights.kind == "file":
            load_weights_into(model, weights, what)
        return Built(model=model.eval(), ref=loaded, revision=revision, tokenizer=tokenizer,
                     transform=image_transform(model), image_config=image_config(model),
                     text_config=text_config(tokenizer, model_cfg, tokenizer_revision))

    def load(self, ref: ModelRef, options: LoadOptions) -> Any:
        from hubtune_openclip.backbone import tower_backbone

        return tower_backbone(self.build(ref, options), options.tower or "image", options)


def make_tokenizer(oc: Any, name: str, what: str, revision: str | None = None) -> Any:
    """``open_clip.get_tokenizer(name)``; a Hugging Face tokenizer (``revision``: the commit fetched through
    the safe snapshot) is read from the local hub cache only."""
    try:
        if revision is None:  # open_clip's bundled BPE vocabulary, or a local-dir repository's own files
            return oc.get_tokenizer(name)
        return oc.get_tokenizer(name, cache_dir=str(hub_cache_dir()), local_files_only=True, revision=revision)
    except Exception as exc:
        raise ModelNotFoundError(f"{what}: open_clip could not build its tokenizer: {type(exc).__name__}: {exc}") from exc


def image_transform(model: Any) -> Any:
    """open_clip's validation transform for the model's preprocessing config (create_model_and_transforms')."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


def image_config(model: Any) -> dict:
    """Everything the image preprocessing depends on, JSON-ready (it goes into the fingerprint)."""
    config = {key: list(value) if isinstance(value, tuple) else value for key, value in model.visual.preprocess_cfg.items()}
    return {**config, "transform": "open_clip.transform.image_transform_v2(is_train=False)"}


def text_config(tokenizer: Any, model_cfg: dict, revision: str | None) -> dict:
    """Everything tokenisation depends on, JSON-ready (it goes into the fingerprint)."""
    text_cfg = (model_cfg or {}).get("text_cfg", {})
    length = int(tokenizer.context_length)
    return {"tokenizer": type(tokenizer).__name__, "context_length": length, "max_length": length,
            "tokenizer_kwargs": text_cfg.get("tokenizer_kwargs", {}), "hf_tokenizer": text_cfg.get("hf_tokenizer_name"),
            **({"tokenizer_revision": revision} if revision else {})}
