"""The public calls behind the CLI: resolve a reference, load a backbone, pull weights."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hubtune import constants
from hubtune.backbone import Backbone, LoadOptions
from hubtune.refs import ModelRef
from hubtune.registry import get_source, resolve_ref
from hubtune.errors import ModelRefError
from hubtune.sources import PullResult, Source


def _prepare(options: LoadOptions | None, overrides: dict[str, Any]) -> LoadOptions:
    options = replace(options, **overrides) if options else LoadOptions(**overrides)
    if options.offline or constants.offline_requested():
        constants.enable_offline_mode()
        options = replace(options, offline=True)
    return options


def _source_of(ref: ModelRef) -> Source:
    """The source serving a resolved reference (``resolve_ref`` always attaches one)."""
    if ref.source is None:
        raise ModelRefError(f"{ref}: no source attached; resolve the reference first")
    return get_source(ref.source)


def load_backbone(ref: str | ModelRef, options: LoadOptions | None = None, **overrides: Any) -> Backbone:
    """Build the frozen backbone named by ``ref``.

    ``overrides`` are :class:`LoadOptions` fields (``layer``, ``pool``, ``precision``, ``device``,
    ``weights``, ``offline``, ``trust_remote_code``, ``prompt``, ``prompt_text``, ``dim``, ``tower``). Offline mode is on when asked for here or by
    ``HF_HUB_OFFLINE`` / ``HUBTUNE_OFFLINE``.
    """
    options = _prepare(options, overrides)
    resolved = resolve_ref(ref)
    return _source_of(resolved).load(resolved, options).choose(options)


def pull(ref: str | ModelRef, options: LoadOptions | None = None, **overrides: Any) -> PullResult:
    """Fetch a model's files into the local hub cache; offline, confirm they are there."""
    options = _prepare(options, overrides)
    resolved = resolve_ref(ref)
    return _source_of(resolved).pull(resolved, options)
