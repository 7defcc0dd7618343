"""Parity of each source with its library's own reference output on the same input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import hubtune


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


SENTENCES = [
    "A man is eating food.",
    "   Leading and trailing whitespace   ",
    "Transfer learning reuses a frozen backbone; only a small head is trained on cached embeddings.",
    "Ünïcödé, emoji 🙂 and punctuation!?",
    "word " * 400,  # longer than the 256-token limit: truncation must match
    "x",
]


def test_hf_text_matches_sentence_transformers() -> None:
    from sentence_transformers import SentenceTransformer

    from hubtune_hf.embedded import embedded_files

    backbone = hubtune.load_backbone("hf:sentence-transformers/all-MiniLM-L6-v2", precision="fp32", device="cpu")
    ours = backbone.embed(SENTENCES, batch_size=4)
    reference = SentenceTransformer(str(embedded_files()), device="cpu").encode(SENTENCES, batch_size=4)
    assert ours.shape == reference.shape == (len(SENTENCES), 384)
    assert _cosine(ours, reference).min() >= 0.99999
    np.testing.assert_allclose(ours, reference, atol=1e-5)


def test_hf_text_plain_model_mean_pooling_and_layers(tiny_bert_repo: str) -> None:
    from transformers import AutoModel, AutoTokenizer

    from hubtune.hfhub import cached_commit, repo_folder

    folder = repo_folder(tiny_bert_repo) / "snapshots" / cached_commit(tiny_bert_repo)
    model = AutoModel.from_pretrained(str(folder)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = SENTENCES[:3]
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        out = model(**encoded, output_hidden_states=True)
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    for layer, hidden in [(None, out.last_hidden_state), ("hidden_states.1", out.hidden_states[1])]:
        expected = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
        backbone = hubtune.load_backbone(f"hf:{tiny_bert_repo}", layer=layer, precision="fp32", device="cpu")
        np.testing.assert_allclose(backbone.embed(texts), expected, atol=1e-5)
    cls = hubtune.load_backbone(f"hf:{tiny_bert_repo}", pool="cls", precision="fp32", device="cpu").embed(texts)
    np.testing.assert_allclose(cls, out.last_hidden_state[:, 0].numpy(), atol=1e-5)


def test_hf_vision_matches_automodel(tiny_vit_repo: str, rgb_images: list[bytes]) -> None:
    from transformers import AutoImageProcessor, AutoModel

    from hubtune.hfhub import cached_commit, repo_folder

    folder = repo_folder(tiny_vit_repo) / "snapshots" / cached_commit(tiny_vit_repo)
    model = AutoModel.from_pretrained(str(folder)).eval()
    processor = AutoImageProcessor.from_pretrained(str(folder))
    pil = [Image.open(io.BytesIO(data)).convert("RGB") for data in rgb_images]
    with torch.no_grad():
        hidden = model(**processor(images=pil, return_tensors="pt")).last_hidden_state
    backbone = hubtune.load_backbone(f"hf:{tiny_vit_repo}", precision="fp32", device="cpu")
    assert backbone.modality == "image" and backbone.pool == "cls"
    np.testing.assert_allclose(backbone.embed(rgb_images), hidden[:, 0].numpy(), atol=1e-5)
    mean = hubtune.load_backbone(f"hf:{tiny_vit_repo}", pool="mean", precision="fp32", device="cpu")
    np.testing.assert_allclose(mean.embed(rgb_images), hidden.mean(1).numpy(), atol=1e-5)


def _save_state(model: torch.nn.Module, path) -> str:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.mark.parametrize("name", ["test_resnet", "test_vit", "test_efficientnet"])
def test_timm_matches_forward_head_pre_logits(name: str, rgb_images: list[bytes], tmp_path) -> None:
    import timm
    from timm.data import create_transform, resolve_model_data_config

    torch.manual_seed(7)
    model = timm.create_model(name, pretrained=False).eval()
    weights = _save_state(model, tmp_path / "w.safetensors")
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    x = torch.stack([transform(Image.open(io.BytesIO(d)).convert("RGB")) for d in rgb_images])
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True).numpy()
    backbone = hubtune.load_backbone(f"timm:{name}", weights=weights, precision="fp32", device="cpu")
    assert backbone.weights.startswith("file-sha256:")
    np.testing.assert_allclose(backbone.embed(rgb_images), expected, rtol=1e-4, atol=1e-5)


def test_timm_intermediate_layer_matches_forward_intermediates(rgb_images: list[bytes], tmp_path) -> None:
    import timm
    from timm.data import create_transform, resolve_model_data_config

    torch.manual_seed(8)
    model = timm.create_model("test_resnet", pretrained=False).eval()
    weights = _save_state(model, tmp_path / "w.safetensors")
    transform = create_transform(**resolve_model_data_config(model), is_training=False)
    x = torch.stack([transform(Image.open(io.BytesIO(d)).convert("RGB")) for d in rgb_images])
    with torch.no_grad():
        (features,) = model.forward_intermediates(x, indices=[2], intermediates_only=True)
    backbone = hubtune.load_backbone("timm:test_resnet", weights=weights, layer="layer2", pool="max",
                                     precision="fp32", device="cpu")
    np.testing.assert_allclose(backbone.embed(rgb_images), features.amax((2, 3)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_matches_identity_classifier(name: str, rgb_images: list[bytes], tmp_path) -> None:
    import torch.nn as nn
    from torchvision.models import get_model, get_model_weights

    torch.manual_seed(9)
    model = get_model(name, weights=None).eval()
    weights = _save_state(model, tmp_path / "w.safetensors")
    transforms = get_model_weights(name).DEFAULT.transforms()
    x = torch.stack([transforms(Image.open(io.BytesIO(d)).convert("RGB")) for d in rgb_images])
    if name == "resnet18":
        model.fc = nn.Identity()
    else:
        model.classifier[-1] = nn.Identity()
    with torch.no_grad():
        expected = model(x).numpy()
    backbone = hubtune.load_backbone(f"torchvision:{name}", weights=weights, precision="fp32", device="cpu")
    np.testing.assert_allclose(backbone.embed(rgb_images), expected, rtol=1e-4, atol=1e-5)


def test_torchvision_layer_by_module_name(rgb_images: list[bytes]) -> None:
    from torchvision.models import get_model, get_model_weights

    backbone = hubtune.load_backbone("torchvision:resnet18", weights="random:2", layer="layer3",
                                     precision="fp32", device="cpu")
    torch.manual_seed(2)
    model = get_model("resnet18", weights=None).eval()
    transforms = get_model_weights("resnet18").DEFAULT.transforms()
    x = torch.stack([transforms(Image.open(io.BytesIO(d)).convert("RGB")) for d in rgb_images])
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        h = model.layer3(model.layer2(model.layer1(h)))
    assert backbone.dim == 256
    np.testing.assert_allclose(backbone.embed(rgb_images), h.mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)
