"""hubtune source ``open_clip``: OpenCLIP two-tower models (CLIP, SigLIP, ...), image and text towers.

References: ``open_clip:ARCH@TAG`` (a row of open_clip's pretrained table, e.g.
``open_clip:ViT-B-32@laion2b_s34b_b79k``; its safetensors weights are fetched from the Hub) and
``open_clip:hf-hub:ORG/NAME`` (a Hub repository with ``open_clip_config.json`` and
``open_clip_model.safetensors``). Needs the optional extra: ``pip install 'hubtune[openclip]'``; without
it the source still registers, and loading says what to install.

Registered through the ``hubtune`` entry-point group exactly as a third-party plugin would be.
"""

from __future__ import annotations

from typing import Callable

from hubtune.hookspecs import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_sources(register: Callable) -> None:
    from hubtune_openclip.source import OpenClipSource  # imports no open_clip (it is optional)

    register(OpenClipSource())
