"""Shared test set-up: every cache in a private temporary folder, no network, tiny models.

The environment is set at import time, before any test imports huggingface_hub (which reads
``HF_HUB_OFFLINE`` once, at import).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="hubtune-tests-"))
os.environ["HF_HOME"] = str(_ROOT / "hf")
os.environ.pop("HF_HUB_CACHE", None)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TORCH_HOME"] = str(_ROOT / "torch")
os.environ["HUBTUNE_HOME"] = str(_ROOT / "hubtune")
os.environ.pop("HUBTUNE_LOAD_PLUGINS", None)

TEST_OWNER = "hubtune-test"


@pytest.fixture(scope="session")
def test_root() -> Path:
    return _ROOT


@pytest.fixture(autouse=True)
def _fresh_plugins():
    """Each test starts from the installed plugins only (no leftovers from another test)."""
    from hubtune import plugins

    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture(scope="session")
def tiny_vit_repo(test_root: Path) -> str:
    """A 2-layer ViT saved with ``save_pretrained`` and seeded into the Hub cache."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    from hubtune.hfhub import seed_snapshot

    folder = test_root / "build" / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=32, patch_size=8)
    ViTModel(config, add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    repo = f"{TEST_OWNER}/tiny-vit"
    seed_snapshot(repo, folder)
    return repo


@pytest.fixture(scope="session")
def tiny_bert_repo(test_root: Path) -> str:
    """A 2-layer BERT (plain transformers repo, no sentence-transformers config) in the Hub cache."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from hubtune.hfhub import seed_snapshot
    from hubtune_hf.embedded import embedded_files

    folder = test_root / "build" / "tiny-bert"
    torch.manual_seed(0)
    tokenizer = BertTokenizerFast(vocab_file=str(embedded_files() / "vocab.txt"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    repo = f"{TEST_OWNER}/tiny-bert"
    seed_snapshot(repo, folder)
    return repo


@pytest.fixture(scope="session")
def rgb_images():
    """A few deterministic RGB images of different sizes, as PNG bytes."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for height, width in [(40, 40), (64, 48), (33, 97)]:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
        images.append(buffer.getvalue())
    return images
