"""hubtune source ``timm``: every timm architecture, pretrained tags and ``hf-hub:`` weights.

Registered through the ``hubtune`` entry-point group exactly as a third-party plugin would be.
"""

from __future__ import annotations

from typing import Callable

from hubtune.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_sources(register: Callable) -> None:
    from hubtune_timm.source import TimmSource

    register(TimmSource())
