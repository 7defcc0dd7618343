"""hubtune source ``torchvision``: the classification models of ``torchvision.models``.

Registered through the ``hubtune`` entry-point group exactly as a third-party plugin would be.
"""

from __future__ import annotations

from typing import Callable

from hubtune.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_sources(register: Callable) -> None:
    from hubtune_torchvision.source import TorchvisionSource

    register(TorchvisionSource())
