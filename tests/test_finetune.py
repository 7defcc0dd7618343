"""Partial fine-tuning: blocks per source, split-point caching, LP-FT, training only the top, the CLI."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

import hubtune
from hubtune.backbone import ImagePreprocessor
from hubtune.finetune.activations import SplitEncoder, cache_activations
from hubtune.finetune.blocks import build_top, split_point
from hubtune.finetune.train import TrainConfig
from hubtune.store import EmbeddingStore

TEXTS = ["short", "a somewhat longer sentence about cats", "one more text, with punctuation!", "dogs"]


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: these models are tiny, and on a shared 2-core machine two threads
    oversubscribe the cores (measured here: 27 ms vs 900 ms a step under load)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _small_input(backbone: hubtune.Backbone, size: int = 32) -> hubtune.Backbone:
    """The backbone with a small fixed-size preprocessing (recorded, so the fingerprint follows)."""
    from torchvision import transforms as T

    backbone.preprocessor = ImagePreprocessor(T.Compose([T.Resize((size, size)), T.ToTensor(),
                                                         T.Normalize([0.5] * 3, [0.5] * 3)]))
    backbone.preprocess_config = {"input_size": [3, size, size], "mean": [0.5] * 3, "std": [0.5] * 3}
    return backbone


@pytest.fixture(scope="module")
def image_data(tmp_path_factory, rgb_images) -> Path:
    """Six distinct images in two classes (PNG bytes varied so every content key differs)."""
    import io

    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    for c in range(2):
        (root / f"class{c}").mkdir()
        for i in range(4):
            pixels = rng.integers(0, 256, (40 + 8 * i, 48, 3), dtype=np.uint8)
            pixels[..., c] = 255 - 40 * i  # a class-dependent colour channel
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, format="PNG")
            (root / f"class{c}" / f"{i}.png").write_bytes(buffer.getvalue())
    return root


def _backbone(ref: str, small: bool) -> hubtune.Backbone:
    backbone = hubtune.load_backbone(ref, weights="random", precision="fp32")
    return _small_input(backbone) if small else backbone


@pytest.mark.parametrize("ref, small", [("timm:test_resnet", True), ("torchvision:resnet18", True), ("bert", False)])
def test_cached_prefix_plus_top_matches_full_model(ref: str, small: bool, image_data: Path, tiny_bert_repo: str,
                                                   tmp_path: Path) -> None:
    import torch

    if ref == "bert":
        ref = f"hf:{tiny_bert_repo}"
        data = tmp_path / "texts.jsonl"
        data.write_text("".join(json.dumps({"text": t, "label": str(i % 2)}) + "\n" for i, t in enumerate(TEXTS)))
        raws = TEXTS
    else:
        data = image_data
        raws = [p.read_bytes() for p in sorted(image_data.rglob("*.png"))]
    backbone = _backbone(ref, small)
    split = backbone.blocks()
    assert backbone.describe()["blocks"] == [name for name, _ in split.blocks]  # what `hubtune info` lists
    head = torch.nn.Linear(backbone.dim, 3)
    expected = head(torch.as_tensor(backbone.embed(raws))).detach()
    for unfreeze in (1, len(split.blocks)):
        start = split_point(split, unfreeze)
        encoder = SplitEncoder(backbone, split, start)
        with EmbeddingStore(tmp_path / f"cache{unfreeze}") as store:
            stored = cache_activations(encoder, data, store, "data", 8, 0, progress=False)
            meta = store.fingerprints()[encoder.fingerprint("float16")]
        assert stored.vectors.dtype == np.float16 and meta["shape"]["hidden"] == encoder.shape
        assert meta["fields"]["layer"] == f"split:{split.blocks[start][0]}"
        if backbone.modality == "text":
            assert meta["shape"]["mask"] == encoder.shape[0]
        order = [stored.origins.index(o) for o in stored.origins]  # dataset order = raws order
        hidden, mask = encoder.unflatten(torch.as_tensor(stored.vectors[order].astype(np.float32)))
        with torch.no_grad():
            got = build_top(split, start, head)(hidden, mask)
        scale = float(expected.abs().max())
        assert float((got - expected).abs().max()) <= 2e-2 * scale, (ref, unfreeze)


def test_layer_decay_groups_follow_timm() -> None:
    import timm
    from timm.optim import param_groups_layer_decay

    from hubtune.finetune.blocks import top_parameters
    from hubtune.finetune.train import param_groups

    backbone = hubtune.load_backbone("timm:test_vit", weights="random", precision="fp32")
    model, split = backbone.model, backbone.blocks()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    ours = param_groups(top_parameters(split, 0), len(split.blocks) + 1, 1.0, 0.05, 0.75)
    theirs = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.75)
    scale = lambda groups: {id(p): (g["lr_scale"], g["weight_decay"]) for g in groups for p in g["params"]}  # noqa: E731
    ours_by_id, theirs_by_id = scale(ours), scale(theirs)
    assert ours_by_id and all(theirs_by_id[key] == value for key, value in ours_by_id.items())
    assert isinstance(model, timm.models.VisionTransformer)


def test_lp_ft_head_reproduces_the_probe() -> None:
    import torch

    from hubtune.finetune.head import initial_head

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    y = np.repeat(np.arange(3), 40)
    z = (centres[y] + rng.normal(size=(120, 16)) * 2 + 5).astype(np.float32)  # offset: standardisation matters
    train, val = np.arange(120) % 4 != 0, np.arange(120) % 4 == 0
    head, info = initial_head({"kind": "linear"}, z[train], y[train], z[val], y[val], 3, seed=0)
    from hubtune.finetune.head import fit_probe

    probe, norm = fit_probe(z[train], y[train], z[val], y[val], 3)
    expected = probe.probabilities(norm(z))
    got = torch.softmax(head(torch.as_tensor(z)).double(), 1).detach().numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (got.argmax(1) == expected.argmax(1)).all() and info["probe_C"] == probe.C


def test_training_moves_only_the_top(image_data: Path, tmp_path: Path) -> None:
    import torch

    from hubtune.finetune.run import FinetuneConfig, finetune
    from hubtune.finetune.train import TrainConfig

    backbone = _backbone("timm:test_resnet", small=True)
    before = {k: v.clone() for k, v in backbone.model.state_dict().items()}
    config = FinetuneConfig(unfreeze=1, train=TrainConfig(lr=1e-2, epochs=2, batch_size=4, restore_best=False))
    summary = finetune("timm:test_resnet", image_data, tmp_path / "head", tmp_path / "cache", config=config,
                       backbone=backbone, progress=False)
    after = backbone.model.state_dict()
    assert summary["unfrozen"] == 1 and summary["trained_blocks"] == ["layer4.0"]
    for name, value in before.items():
        if name.startswith("layer4."):
            continue
        assert torch.equal(value, after[name]), f"{name} below the split changed"
    trained = [n for n, p in backbone.model.named_parameters() if n.startswith("layer4.")]
    assert trained and all(not torch.equal(before[n], after[n]) for n in trained), "a trained parameter did not move"
    history = json.loads((tmp_path / "head" / "head.json").read_text())["metrics"]["history"]
    assert history[0]["val_accuracy"] == summary["probe_val_accuracy"]  # LP-FT: step 0 is the probe


def test_unfreeze_auto_says_why() -> None:
    from hubtune.finetune.run import choose_unfreeze

    assert choose_unfreeze("auto", 50, 5, 8)[0] == 0
    n, why = choose_unfreeze("auto", 5_000, 10, 8)
    assert n == 2 and "5000" in why
    assert choose_unfreeze("auto", 100_000, 10, 12)[0] == 4
    assert choose_unfreeze(3, 10, 10, 8) == (3, "--unfreeze 3 as asked")


def test_cache_budget_is_refused_with_the_size(image_data: Path, tmp_path: Path) -> None:
    from hubtune.finetune.activations import ActivationCacheError, choose_mode

    backbone = _backbone("timm:test_resnet", small=True)
    encoder = SplitEncoder(backbone, backbone.blocks(), 0)
    with pytest.raises(ActivationCacheError, match=r"= [0-9.]+ MB, over --max-cache-gb 1e-06"):
        choose_mode("cache", encoder, 1000, 1e-6)
    assert choose_mode("auto", encoder, 1000, 1e-6)[0] == "recompute"
    assert choose_mode("cache", encoder, 1000, 1.0)[0] == "cache"


@pytest.mark.slow
def test_cli_finetune_predict_eval_export(run_hubtune, image_data: Path, tmp_path: Path) -> None:
    """The whole path through the CLI, recomputing the frozen part; the export agrees with predict."""
    import torch

    out, cache = tmp_path / "head", tmp_path / "cache"
    common = ["--cache", str(cache), "--json"]
    run_cli = functools.partial(run_hubtune, env={"OMP_NUM_THREADS": "1"})
    result = json.loads(run_cli("finetune", "timm:test_resnet", str(image_data), "--unfreeze", "2", "--out", str(out),
                                "--weights", "random", "--epochs", "2", "--batch-size", "4", "--activations", "recompute",
                                "--head", "mlp", "--hidden", "16,8", "--precision", "fp32", "--no-progress",
                                *common).stdout)
    assert result["unfrozen"] == 2 and result["activations"] == "recompute" and result["val_accuracy"] is not None
    image = sorted(image_data.rglob("*.png"))[0]
    predicted = json.loads(run_cli("predict", str(out), str(image), *common).stdout)
    evaluated = json.loads(run_cli("eval", str(out), str(image_data), *common).stdout)
    assert evaluated["n"] == 8 and predicted[0]["label"] in ("class0", "class1")
    run_cli("export-model", str(out), "--out", str(tmp_path / "export" / "model.safetensors"))
    loader = tmp_path / "export" / "hubtune_loader.py"
    assert "hubtune" not in {line.split()[1].split(".")[0] for line in loader.read_text().splitlines()
                             if line.startswith(("import ", "from "))}
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubtune_loader", loader)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, meta = module.load(str(tmp_path / "export" / "model.safetensors"))
    backbone = hubtune.load_backbone("timm:test_resnet", weights="random", precision="fp32")
    pixels = backbone.preprocessor(image.read_bytes())["pixel_values"][None]
    with torch.no_grad():
        score = torch.softmax(model(pixels), 1).max().item()
    assert meta["classes"] == ["class0", "class1"] and abs(score - predicted[0]["score"]) < 1e-2


@pytest.mark.slow
def test_unfreezing_beats_the_frozen_probe_on_digits(tmp_path: Path) -> None:
    """Random-init timm ResNet, scikit-learn's digits upsampled to 32 x 32: the frozen features are
    weak, and training the top 2 blocks scores better than the linear probe on held-out digits."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from hubtune.finetune.run import FinetuneConfig, finetune
    from hubtune.finetune.saved import FinetunedHead

    digits = load_digits()
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target)):
        root = tmp_path / ("test" if i % 5 == 1 else "data") / ("val" if i % 5 == 0 else "train")
        folder = (tmp_path / "test" / str(label)) if i % 5 == 1 else root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((pixels / 16 * 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR)
        image.convert("RGB").save(folder / f"{i}.png")
    scores = {}
    for unfreeze in (0, 2):
        config = FinetuneConfig(unfreeze=unfreeze, train=TrainConfig(lr=1e-3, epochs=10, patience=10))
        finetune("timm:test_resnet", tmp_path / "data", tmp_path / f"head{unfreeze}", tmp_path / "cache", config=config,
                 backbone=_backbone("timm:test_resnet", small=True), progress=False)
        head = FinetunedHead.load(tmp_path / f"head{unfreeze}")
        encoder = head.bind(_backbone("timm:test_resnet", small=True))  # the saved top, loaded back
        with EmbeddingStore(tmp_path / "cache") as store:
            test = cache_activations(encoder, tmp_path / "test", store, "test", 64, 0, progress=False)
        probabilities = head.probabilities(test.vectors.astype(np.float32), encoder.fingerprint("float16"))
        y = np.array([head.classes.index(label) for label in test.labels])
        scores[unfreeze] = float((probabilities.argmax(1) == y).mean())
    assert scores[2] > scores[0] + 0.01, scores


def test_text_finetune_predict_and_export(tiny_bert_repo: str, tmp_path: Path) -> None:
    """A BERT top trained from cached activations (with their masks); predict and the export agree."""
    import torch

    from hubtune.finetune.export import export_model
    from hubtune.finetune.run import FinetuneConfig, finetune
    from hubtune.heads.protocol import Head
    from hubtune.heads.use import load_head, predict

    ref = f"hf:{tiny_bert_repo}"
    data = tmp_path / "texts.jsonl"
    rows = [{"text": f"{word} {i}", "label": label} for i in range(6) for word, label in (("good", "pos"), ("bad", "neg"))]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = finetune(ref, data, tmp_path / "head", tmp_path / "cache",
                       options=hubtune.LoadOptions(weights="random", precision="fp32"),
                       config=FinetuneConfig(unfreeze=1, train=TrainConfig(epochs=2, batch_size=4)), progress=False)
    assert summary["trained_blocks"] == ["encoder.layer.1"]
    predicted = predict(load_head(tmp_path / "head"), ["good 99", "bad 99"], tmp_path / "cache")
    head = hubtune.load_head(tmp_path / "head", cache=tmp_path / "cache")  # the Python API of every head kind
    assert isinstance(head, Head) and head.predict(["good 99", "bad 99"]) == [row["label"] for row in predicted]
    np.testing.assert_allclose(head.predict_proba(["good 99", "bad 99"]).max(1), [row["score"] for row in predicted],
                               atol=1e-6)
    export_model(tmp_path / "head", tmp_path / "export" / "model.safetensors")
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubtune_loader", tmp_path / "export" / "hubtune_loader.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model, meta = module.load(str(tmp_path / "export" / "model.safetensors"))
    backbone = hubtune.load_backbone(ref, weights="random", precision="fp32")
    batch = backbone.preprocessor.collate([backbone.preprocessor(text) for text in ("good 99", "bad 99")])
    with torch.no_grad():
        scores = torch.softmax(model(batch["input_ids"], batch["attention_mask"]), 1).max(1).values
    assert meta["library"] == "transformers" and meta["classes"] == ["neg", "pos"]
    np.testing.assert_allclose(scores.numpy(), [row["score"] for row in predicted], atol=1e-2)
