"""Tiny open_clip models for tests (no download): an architecture registered with open_clip, and Hub-style
repositories (``open_clip_config.json`` + weights) seeded into the hub cache.

open_clip has no test-sized configuration built in, so :data:`TINY_CONFIG` is one (a 2-block ViT on 32x32
images, a 2-block text transformer over open_clip's bundled BPE vocabulary, 16-d embeddings). Shared by
``tests/test_openclip.py`` and the loop matrix's recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_ARCH = "hubtune-tiny-clip"
TINY_REPO = "hubtune-test/tiny-openclip"
BIN_REPO = "hubtune-test/tiny-openclip-bin"
SIGLIP_REPO = "hubtune-test/tiny-openclip-siglip"  # with a logit_bias: scored with a sigmoid
TINY_TAG = "tiny_s1"  # a pretrained tag registered for TINY_ARCH, whose hf_hub is TINY_REPO
TINY_CONFIG: dict[str, Any] = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
#: the preprocessing the repository declares (not open_clip's defaults, so using it is checked)
TINY_PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear",
                   "resize_mode": "squash"}


def register_tiny_arch(root: Path) -> str:
    """Make ``TINY_ARCH`` one of open_clip's architectures in this process (idempotent)."""
    import open_clip

    path = root / "build" / "openclip-arch" / f"{TINY_ARCH}.json"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(TINY_CONFIG))
    if TINY_ARCH not in open_clip.list_models():
        open_clip.add_model_config(path)
    return TINY_ARCH


def tiny_config(repo: str = "") -> dict[str, Any]:
    """``TINY_CONFIG``; SigLIP-style (a learnt ``logit_bias``, SigLIP's initial scale and bias) for ``SIGLIP_REPO``."""
    import math

    siglip = {"init_logit_scale": math.log(10), "init_logit_bias": -10.0} if repo == SIGLIP_REPO else {}
    return {**TINY_CONFIG, **siglip}


def tiny_model(seed: int, repo: str = "") -> Any:
    """The tiny CLIP with a seeded init, built from the configuration alone (no registration needed)."""
    import torch
    from open_clip import CLIP

    torch.manual_seed(seed)
    return CLIP(**tiny_config(repo)).eval()


def save_weights(model: Any, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, str(path))


def tiny_repo_folder(folder: Path, seed: int = 0, weights: str = "safetensors", repo: str = "") -> Path:
    """An open_clip Hub repository: ``open_clip_config.json`` and the weights as ``open_clip_model.safetensors``
    (``weights="safetensors"``), only a pickled ``open_clip_pytorch_model.bin`` (``"bin"``), or both."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": tiny_config(repo),
                                                              "preprocess_cfg": TINY_PREPROCESS}))
    model = tiny_model(seed, repo)
    if weights in ("safetensors", "both"):
        save_weights(model, folder / "open_clip_model.safetensors")
    if weights in ("bin", "both"):
        torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def seed_tiny_repo(root: Path, repo: str = TINY_REPO, seed: int = 0, weights: str = "safetensors") -> str:
    """``repo`` in the hub cache (offline-loadable as ``open_clip:hf-hub:REPO``); returns the repo id."""
    from hubtune.hfhub import seed_snapshot

    folder = root / "build" / f"openclip-{repo.replace('/', '--')}-{seed}-{weights}"
    if not folder.is_dir():
        tiny_repo_folder(folder, seed, weights, repo)
    seed_snapshot(repo, folder)
    return repo


def register_tiny_tag(root: Path) -> str:
    """``open_clip:TINY_ARCH@TINY_TAG``: a row of open_clip's pretrained table pointing at ``TINY_REPO``
    (seeded), for the ARCH@TAG form. Returns the reference."""
    from open_clip import pretrained

    register_tiny_arch(root)
    seed_tiny_repo(root)
    pretrained._PRETRAINED.setdefault(TINY_ARCH, {})[TINY_TAG] = {
        "url": "", "hf_hub": f"{TINY_REPO}/", "quick_gelu": False, **{k: tuple(v) if isinstance(v, list) else v
                                                                      for k, v in TINY_PREPROCESS.items()}}
    return f"open_clip:{TINY_ARCH}@{TINY_TAG}"


# -- for the loop matrix (tests/test_loop_matrix.py's Recipe) -------------------------------------------------
MATRIX_REF = f"open_clip:hf-hub:{TINY_REPO}"
MATRIX_LAYER_POOL = ("tokens", "mean")


def matrix_seed(root: Path) -> None:
    """The default weights of ``MATRIX_REF`` into the hub cache."""
    seed_tiny_repo(root)


def matrix_weights(path: Path) -> None:
    """A safetensors state dict of the whole tiny CLIP (another seed) for ``--weights PATH``."""
    save_weights(tiny_model(27), path)
