"""Every environment variable hubtune reads, in one place (as huggingface_hub's ``constants.py``).

They are read through functions, not at import time, so a test or a CLI flag that changes the
environment takes effect without re-importing anything.
"""

from __future__ import annotations

import os
from pathlib import Path

ENTRY_POINT_GROUP = "hubtune"
DEFAULT_MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"

_TRUE = {"1", "true", "yes", "on"}


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in _TRUE


def hubtune_home() -> Path:
    """``HUBTUNE_HOME``, else ``$XDG_CACHE_HOME/hubtune``, else ``~/.cache/hubtune``."""
    if os.environ.get("HUBTUNE_HOME"):
        return Path(os.environ["HUBTUNE_HOME"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "hubtune"


def default_cache_dir() -> Path:
    """The embedding store used when a command is given no ``--cache``."""
    return hubtune_home() / "cache"


def plugin_allowlist() -> set[str] | None:
    """``HUBTUNE_LOAD_PLUGINS``: comma-separated entry-point names to load.

    Unset means "load every installed plugin"; set but empty means "load none".
    """
    raw = os.environ.get("HUBTUNE_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def auto_precision() -> str | None:
    """``HUBTUNE_AUTO_PRECISION``: what ``--precision auto`` resolves to (``fp32``, ``bf16`` or ``fp16``).

    Unset or empty means "detect from the device" (:func:`hubtune.runtime.resolve_precision`).
    Meant for tests, so that a suite runs one path whatever the CPU; an explicit ``--precision``
    is never changed by it. The value is returned lower-cased and unchecked: the caller refuses
    anything else with a clear error.
    """
    raw = (os.environ.get("HUBTUNE_AUTO_PRECISION") or "").strip().lower()
    return raw or None


def offline_requested() -> bool:
    """``HUBTUNE_OFFLINE``, ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` set to a true value."""
    return any(
        _is_true(os.environ.get(name))
        for name in ("HUBTUNE_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def enable_offline_mode() -> None:
    """Switch every hub client in this process to offline mode.

    Sets the environment for libraries not imported yet, and patches huggingface_hub's constant
    when it is already imported (it reads the variable once, at import).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HUBTUNE_OFFLINE"] = "1"
    import sys

    hub_constants = sys.modules.get("huggingface_hub.constants")
    if hub_constants is not None:
        setattr(hub_constants, "HF_HUB_OFFLINE", True)  # noqa: B010 (a module attribute read at call time)


SERVE_TOKEN_ENV = "HUBTUNE_SERVE_TOKEN"


def serve_token(variable: str | None = None) -> str | None:
    """The bearer token ``hubtune serve`` requires on its ``/v1`` routes: the value of ``variable``
    (``--token-env VAR``), else of ``HUBTUNE_SERVE_TOKEN``; None (no token required) when unset or empty."""
    return os.environ.get(variable or SERVE_TOKEN_ENV) or None
