"""hubtune source ``hf``: text and vision models from the Hugging Face Hub via transformers.

Registered through the ``hubtune`` entry-point group exactly as a third-party plugin would be.
Importing this module is cheap; transformers loads only when a model does.
"""

from __future__ import annotations

from typing import Callable

from hubtune.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_sources(register: Callable) -> None:
    from hubtune_hf.source import HFSource

    register(HFSource())
