"""The pretrained-weights code paths, exercised offline against caches seeded in the test.

Real loading code runs unchanged: the Hub cache gets a snapshot laid out exactly as
huggingface_hub writes one, and torch's hub folder gets a checkpoint under torchvision's file name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import hubtune
from hubtune.hfhub import seed_snapshot

SHA = "feedfacefeedfacefeedfacefeedfacefeedface"


@pytest.fixture(scope="module")
def timm_hub_model(test_root: Path):
    """test_resnet with random weights, saved the way timm publishes to the Hub, as its own repo."""
    import timm

    torch.manual_seed(11)
    model = timm.create_model("test_resnet.r160_in1k", pretrained=False).eval()
    folder = test_root / "build" / "timm-test-resnet"
    timm.models.save_for_hf(model, str(folder), safe_serialization="both")
    (folder / "pytorch_model.bin").unlink(missing_ok=True)  # safetensors only, as hubtune fetches
    seed_snapshot("timm/test_resnet.r160_in1k", folder, commit=SHA)
    seed_snapshot("hubtune-test/timm-resnet", folder)
    return model


def test_timm_pretrained_tag_loads_pinned_hub_snapshot(timm_hub_model, rgb_images) -> None:
    backbone = hubtune.load_backbone("timm:test_resnet.r160_in1k", precision="fp32", device="cpu")
    assert backbone.revision == SHA and str(backbone.ref) == f"timm:test_resnet.r160_in1k@{SHA}"
    with torch.no_grad():
        expected = backbone.preprocessor.collate([backbone.preprocessor(d) for d in rgb_images])["pixel_values"]
        expected = timm_hub_model.forward_head(timm_hub_model.forward_features(expected), pre_logits=True)
    np.testing.assert_allclose(backbone.embed(rgb_images), expected.numpy(), rtol=1e-4, atol=1e-5)


def test_timm_hf_hub_id(timm_hub_model, rgb_images) -> None:
    backbone = hubtune.load_backbone("timm:hf-hub:hubtune-test/timm-resnet", precision="fp32", device="cpu")
    reference = hubtune.load_backbone("timm:test_resnet.r160_in1k", precision="fp32", device="cpu")
    np.testing.assert_allclose(backbone.embed(rgb_images), reference.embed(rgb_images), atol=1e-6)
    assert hubtune.resolve_ref("hf-hub:hubtune-test/timm-resnet").source == "timm"


def test_timm_pull_reports_commit_and_folder(timm_hub_model) -> None:
    result = hubtune.pull("timm:test_resnet.r160_in1k", offline=True)
    assert result.revision == SHA and (Path(result.path) / "model.safetensors").is_file()


@pytest.fixture(scope="module")
def torchvision_checkpoint():
    """resnet18 random weights stored where torchvision's IMAGENET1K_V1 checkpoint would be."""
    from torchvision.models import ResNet18_Weights, get_model

    from hubtune_torchvision.source import _checkpoint_path

    torch.manual_seed(12)
    model = get_model("resnet18", weights=None).eval()
    path = _checkpoint_path(ResNet18_Weights.IMAGENET1K_V1.url)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return model


def test_torchvision_default_weights_from_cache(torchvision_checkpoint, rgb_images) -> None:
    import torch.nn as nn

    backbone = hubtune.load_backbone("torchvision:resnet18", precision="fp32", device="cpu", offline=True)
    assert backbone.revision == "IMAGENET1K_V1"  # DEFAULT, recorded under its real name
    x = backbone.preprocessor.collate([backbone.preprocessor(d) for d in rgb_images])["pixel_values"]
    torchvision_checkpoint.fc = nn.Identity()
    with torch.no_grad():
        expected = torchvision_checkpoint(x).numpy()
    np.testing.assert_allclose(backbone.embed(rgb_images), expected, rtol=1e-4, atol=1e-5)
    pulled = hubtune.pull("torchvision:resnet18@IMAGENET1K_V1", offline=True)
    assert pulled.revision == "IMAGENET1K_V1" and Path(pulled.path).is_file()


def test_torchvision_unknown_weights_lists_members() -> None:
    from hubtune.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="IMAGENET1K_V1"):
        hubtune.load_backbone("torchvision:resnet18@NOPE", offline=True)
