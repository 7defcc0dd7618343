"""The hf source's image embeddings equal what each vision family returns itself (tiny random replicas).

Each family is built from a small config, saved with ``save_pretrained`` next to its image processor
config and seeded into the Hub cache; the reference is transformers run directly on the same
preprocessed pixel values, at fp32.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from PIL import Image

import hubtune
from hubtune.errors import BackboneOptionError

OWNER = "hubtune-test"
COSINE = 1 - 1e-4


def _families() -> dict[str, Callable[[], tuple[Any, Any]]]:
    """name -> () -> (model, image processor), each tiny."""
    import transformers as T

    vit = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
               patch_size=8)
    crop = dict(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32})
    return {
        "dinov2": lambda: (T.Dinov2Model(T.Dinov2Config(**vit)), T.BitImageProcessor(**crop)),
        "dinov2-registers": lambda: (T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(**vit, num_register_tokens=2)),
                                     T.BitImageProcessor(**crop)),
        "dinov3": lambda: (T.DINOv3ViTModel(T.DINOv3ViTConfig(**vit, num_register_tokens=2)),
                           T.DINOv3ViTImageProcessor(size={"height": 32, "width": 32})),
        "convnext": lambda: (T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)),
                             T.ConvNextImageProcessor(size={"shortest_edge": 32})),
        "resnet": lambda: (T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])),
                           T.ConvNextImageProcessor(size={"shortest_edge": 32})),
        "swin": lambda: (T.SwinModel(T.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1],
                                                  num_heads=[1, 2], window_size=4)),
                         T.ViTImageProcessor(size={"height": 32, "width": 32})),
        "efficientnet": lambda: (T.EfficientNetModel(T.EfficientNetConfig(image_size=64, width_coefficient=0.1,
                                                                          depth_coefficient=0.1, hidden_dim=128)),
                                 T.EfficientNetImageProcessor(size={"height": 64, "width": 64})),
        "clip-vision-projection": lambda: (
            T.CLIPVisionModelWithProjection(T.CLIPVisionConfig(**vit, projection_dim=24)),
            T.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})),
        "vit": lambda: (T.ViTModel(T.ViTConfig(**vit)), T.ViTImageProcessor(size={"height": 32, "width": 32})),
    }


@pytest.fixture(scope="module")
def repos(test_root: Path) -> dict[str, str]:
    """Every family saved and seeded into the Hub cache: name -> repository id."""
    from hubtune.hfhub import seed_snapshot

    out = {}
    for index, (name, make) in enumerate(_families().items()):
        torch.manual_seed(index)
        model, processor = make()
        with torch.no_grad():  # random weights everywhere, so no norm is an identity
            for parameter in model.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.02)
        folder = test_root / "build" / f"vision-{name}"
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out[name] = f"{OWNER}/vision-{name}"
        seed_snapshot(out[name], folder)
    return out


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    rng = np.random.default_rng(3)
    found = []
    for height, width in [(40, 40), (64, 48), (33, 97)]:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
        found.append(buffer.getvalue())
    return found


def _reference(repo: str, images: list[bytes]) -> Any:
    """The model's own outputs on the processor's pixel values, computed with transformers alone."""
    from transformers import AutoImageProcessor

    from hubtune.hfhub import cached_commit, repo_folder
    import transformers

    folder = repo_folder(repo) / "snapshots" / cached_commit(repo)
    architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    model = getattr(transformers, architecture).from_pretrained(str(folder)).eval()
    processor = AutoImageProcessor.from_pretrained(str(folder))
    pixels = processor(images=[Image.open(io.BytesIO(d)).convert("RGB") for d in images], return_tensors="pt")
    with torch.no_grad():
        return model(pixel_values=pixels["pixel_values"], output_hidden_states=True)


def _assert_same(ours: np.ndarray, expected: Any) -> None:
    expected = expected.detach().numpy()
    assert ours.shape == expected.shape
    cosine = (ours * expected).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= COSINE, cosine
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)


def _load(repo: str, **options: Any) -> Any:
    return hubtune.load_backbone(f"hf:{repo}", precision="fp32", device="cpu", **options)


# family -> the default pool's canonical name; the default vector is the model's own image vector
DEFAULTS = {"dinov2": "cls", "dinov2-registers": "cls", "dinov3": "cls", "convnext": "native", "resnet": "native",
            "swin": "native", "efficientnet": "native", "clip-vision-projection": "native"}


@pytest.mark.parametrize("family", sorted(DEFAULTS))
def test_default_embedding_is_the_models_own_output(family: str, repos: dict[str, str], images: list[bytes]) -> None:
    backbone = _load(repos[family])
    assert (backbone.layer, backbone.pool) == ("last", DEFAULTS[family])
    outputs = _reference(repos[family], images)
    own = outputs.image_embeds if family == "clip-vision-projection" else outputs.pooler_output.flatten(1)
    _assert_same(backbone.embed(images), own)
    if "native" in backbone.layer_pools.names and backbone.pool != "native":  # DINO: native is the same vector
        _assert_same(_load(repos[family], pool="native").embed(images), own)


@pytest.mark.parametrize("family,registers", [("dinov2", 0), ("dinov2-registers", 2), ("dinov3", 2)])
def test_cls_mean_is_dinov2s_linear_protocol_input(family: str, registers: int, repos: dict[str, str],
                                                  images: list[bytes]) -> None:
    tokens = _reference(repos[family], images).last_hidden_state  # after the final layernorm
    expected = torch.cat([tokens[:, 0], tokens[:, 1 + registers:].mean(1)], dim=1)  # patch tokens only
    backbone = _load(repos[family], pool="cls+mean")
    assert backbone.dim == 2 * tokens.shape[-1]
    _assert_same(backbone.embed(images), expected)


def test_other_pools_pool_the_layer_as_it_is(repos: dict[str, str], images: list[bytes]) -> None:
    convnext = _reference(repos["convnext"], images)
    _assert_same(_load(repos["convnext"], pool="avg").embed(images), convnext.last_hidden_state.mean((2, 3)))
    _assert_same(_load(repos["convnext"], pool="mean").embed(images), convnext.last_hidden_state.mean((2, 3)))
    swin = _load(repos["swin"], layer="hidden_states.1")
    assert swin.pool == "mean"  # Swin has no CLS token: a token layer defaults to the mean
    _assert_same(swin.embed(images), _reference(repos["swin"], images).hidden_states[1].mean(1))
    vit = _load(repos["vit"])  # ViT's pooler is a dense + tanh head: the CLS token stays the default
    assert vit.pool == "cls" and "native" not in vit.layer_pools.names
    vit_out = _reference(repos["vit"], images)
    _assert_same(vit.embed(images), vit_out.last_hidden_state[:, 0])
    _assert_same(_load(repos["vit"], pool="cls+mean").embed(images),
                 torch.cat([vit_out.last_hidden_state[:, 0], vit_out.last_hidden_state[:, 1:].mean(1)], dim=1))


def test_a_changed_default_has_a_new_pool_name(repos: dict[str, str]) -> None:
    """ConvNeXt's old default (the mean of the map before its final layernorm) was ``avg``: the new
    default is ``native``, so vectors cached under the old fingerprint are never read as the new ones."""
    native, avg = _load(repos["convnext"]), _load(repos["convnext"], pool="avg")
    assert native.pool == "native" and native.fingerprint() != avg.fingerprint()
    assert _load(repos["dinov2"], pool="native").fingerprint() != _load(repos["dinov2"]).fingerprint()


@pytest.mark.parametrize("family,pool", [("dinov2", None), ("dinov2-registers", "cls+mean"), ("dinov2", "native"),
                                         ("convnext", None), ("convnext", "max"), ("resnet", None),
                                         ("efficientnet", None), ("vit", None)])
def test_block_split_reproduces_the_embedding(family: str, pool: str | None, repos: dict[str, str],
                                              images: list[bytes]) -> None:
    backbone = _load(repos[family], pool=pool)
    split = backbone.blocks()
    assert split.layer == "last" and len(split.blocks) >= 2
    batch = backbone.to_device(backbone.preprocessor.collate([backbone.preprocessor(i) for i in images]))
    with torch.no_grad():
        _assert_same(split.full(batch).numpy(), backbone.forward(batch))


def test_blocks_are_listed_for_another_layer_too(repos: dict[str, str]) -> None:
    """``hubtune info --layer hidden_states.1`` still lists the blocks (fine-tuning then asks to drop --layer)."""
    names = _load(repos["convnext"], layer="hidden_states.1").block_names()
    assert names == _load(repos["convnext"]).block_names() and names[-1] == "encoder.stages.1.layers.0"


@pytest.mark.parametrize("family", ["swin", "dinov3", "clip-vision-projection"])
def test_families_the_split_cannot_reproduce_refuse(family: str, repos: dict[str, str]) -> None:
    backbone = _load(repos[family])
    with pytest.raises(BackboneOptionError, match="cannot be partially fine-tuned"):
        backbone.blocks()
    assert backbone.block_names() == []


def test_extract_then_export_stores_the_models_own_vector(repos: dict[str, str], tmp_path: Path) -> None:
    from hubtune.cli import main

    data = tmp_path / "data"
    for index, image in enumerate([(40, 40), (64, 48), (33, 97)]):
        (data / "a").mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(index)
        Image.fromarray(rng.integers(0, 256, (*image, 3), dtype=np.uint8)).save(data / "a" / f"{index}.png")
    ref, common = f"hf:{repos['convnext']}", ["--cache", str(tmp_path / "cache"), "--precision", "fp32",
                                                "--device", "cpu", "--stored-dtype", "float32"]
    for argv in (["extract", ref, str(data), "--dataset", "d", "--workers", "0", "--no-progress", *common],
                 ["export", "--model", ref, "--dataset", "d", "--out", str(tmp_path / "out"), *common]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 0
    stored = np.load(tmp_path / "out" / "embeddings.npy")
    order = [json.loads(line)["origin"] for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    expected = _reference(repos["convnext"], [Path(o).read_bytes() for o in order]).pooler_output
    _assert_same(stored, expected)
