"""Text-image models through the hf source: CLIP, SigLIP and SigLIP 2 (tiny random replicas seeded into
the Hub cache), one reference with two towers into one space.

Parity: each tower's vectors equal the model's own ``get_image_features`` / ``get_text_features`` on
the repository processor's own inputs (fp32). Then the loop: both towers extracted into one store, a
text query searching an image dataset, and the zero-shot head through ``train`` / ``eval`` / ``predict``,
each against a computation by hand.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tiny_clip import TEXT, VISION, tiny_clip_repo

TEST_OWNER = "hubtune-test"  # as tests/conftest.py (test modules share fixtures, never imports)

PINNED = ["--precision", "fp32", "--device", "cpu"]
WORDS = "a photo of the cat dog bird car this is an red blue very long text here".split()
TEXTS = ["a cat", "a photo of a very long red car here", "dog", "this is a photo of the blue bird"]


# -- tiny repositories ----------------------------------------------------------------------------------------
def _gemma_vocab() -> dict[str, int]:
    """Special tokens, the characters of ``WORDS`` (sentencepiece style, ``▁`` for a space), byte fallbacks."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for char in sorted(set("".join(WORDS)) | set("▁.,")):
        vocab[char] = len(vocab)
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    return vocab




def _seed(name: str, folder: Path) -> str:
    from hubtune.hfhub import seed_snapshot

    repo = f"{TEST_OWNER}/{name}"
    seed_snapshot(repo, folder)
    return repo


@pytest.fixture(scope="module")
def clip_repo(test_root: Path) -> str:
    return tiny_clip_repo(test_root)


@pytest.fixture(scope="module")
def siglip_repo(test_root: Path) -> str:
    """SigLIP with a Gemma tokenizer (as SigLIP 2's fixed-resolution checkpoints are), saved with its processor."""
    import torch
    from transformers import GemmaTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    folder = test_root / "build" / "tiny-siglip"
    tokenizer = GemmaTokenizer(vocab=_gemma_vocab(), merges=[], model_max_length=64)
    torch.manual_seed(1)
    config = SiglipConfig(text_config=dict(TEXT, vocab_size=len(tokenizer), max_position_embeddings=64,
                                           pad_token_id=0, eos_token_id=1, bos_token_id=2),
                          vision_config=dict(VISION, image_size=32, patch_size=8))
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.5)
    model.save_pretrained(folder)
    SiglipProcessor(SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer).save_pretrained(folder)
    return _seed("tiny-siglip", folder)


@pytest.fixture(scope="module")
def siglip2_repo(test_root: Path) -> str:
    """SigLIP 2 (NaFlex: patches, their mask and shapes) with its own processor, saved the transformers 5 way."""
    import torch
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor, Siglip2Tokenizer

    folder = test_root / "build" / "tiny-siglip2"
    tokenizer = Siglip2Tokenizer(vocab=_gemma_vocab(), merges=[], model_max_length=64)
    torch.manual_seed(2)
    config = Siglip2Config(text_config=dict(TEXT, vocab_size=len(tokenizer), max_position_embeddings=64,
                                            pad_token_id=0, eos_token_id=1, bos_token_id=2),
                           vision_config=dict(VISION, num_patches=256, patch_size=16))
    Siglip2Model(config).save_pretrained(folder)
    Siglip2Processor(Siglip2ImageProcessor(patch_size=16, max_num_patches=256), tokenizer).save_pretrained(folder)
    return _seed("tiny-siglip2", folder)


@pytest.fixture(scope="module")
def repos(clip_repo: str, siglip_repo: str, siglip2_repo: str) -> dict[str, str]:
    return {"clip": clip_repo, "siglip": siglip_repo, "siglip2": siglip2_repo}


def _reference(repo: str) -> tuple[Any, Any]:
    """The model and processor as transformers loads them from the snapshot (no hubtune)."""
    import torch
    from huggingface_hub import snapshot_download
    from transformers import AutoModel, AutoProcessor

    folder = snapshot_download(repo)
    return AutoModel.from_pretrained(folder, dtype=torch.float32).eval(), AutoProcessor.from_pretrained(folder)


def _features(output: Any) -> np.ndarray:
    return (output if hasattr(output, "numpy") else output.pooler_output).detach().numpy()


def _reference_text(family: str, model: Any, processor: Any, texts: list[str]) -> np.ndarray:
    """CLIP: the processor's batch padded to its longest text, with its mask (as the model card does).
    SigLIP: padded to max_length (64) as its model card and the zero-shot pipeline do; SigLIP 2: the
    processor's own defaults (max_length 64); both without an attention mask, as big_vision trained them."""
    import torch

    with torch.no_grad():
        if family == "clip":
            return _features(model.get_text_features(**processor(text=texts, padding=True, return_tensors="pt")))
        kwargs = {"padding": "max_length"} if family == "siglip" else {}
        ids = processor(text=texts, return_tensors="pt", **kwargs)["input_ids"]
        assert ids.shape[1] == 64
        return _features(model.get_text_features(input_ids=ids))


def _images(png: Any, count: int = 3) -> list[bytes]:
    return [png(40 + seed, (30 + 7 * seed, 50 - 5 * seed)) for seed in range(count)]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# -- parity ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["clip", "siglip", "siglip2"])
def test_each_tower_equals_the_models_own_features(repos: dict[str, str], family: str, png: Any, figure: Any) -> None:
    import io

    import torch
    from PIL import Image

    from hubtune import load_backbone

    repo = repos[family]
    model, processor = _reference(repo)
    images = _images(png)
    image = load_backbone(f"hf:{repo}", precision="fp32", device="cpu")  # no tower asked: the image tower
    assert image.modality == "image" and image.tower == "image" and image.layer == "embeds" and image.pool == "native"
    with torch.no_grad():
        pixels = processor(images=[Image.open(io.BytesIO(b)).convert("RGB") for b in images], return_tensors="pt")
        expected_images = _features(model.get_image_features(**pixels))
    got_images = image.embed(images)

    text = load_backbone(f"hf:{repo}", precision="fp32", device="cpu", tower="text")
    assert text.modality == "text" and text.tower == "text"
    expected_texts = _reference_text(family, model, processor, TEXTS)
    got_texts = text.embed(TEXTS, batch_size=4)  # one batch of texts of different lengths
    alone = np.concatenate([text.embed([t]) for t in TEXTS])  # and each text in a batch of its own
    shared = image.tower_backbone("text")  # the other tower of the loaded model: the same weights
    assert shared.model is image.model and shared.tower_backbone("image") is image
    np.testing.assert_allclose(shared.embed(TEXTS), got_texts, rtol=1e-5, atol=1e-6)

    worst = {name: float(1 - _cosines(got, want).min()) for name, got, want in
             (("image", got_images, expected_images), ("text", got_texts, expected_texts), ("alone", alone, expected_texts))}
    figure(f"two-tower parity {family}", json.dumps(worst))
    assert max(worst.values()) < 1e-4, worst
    np.testing.assert_allclose(got_images, expected_images, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_texts, expected_texts, rtol=1e-4, atol=1e-5)


def test_the_towers_have_their_own_fingerprint_and_layers(clip_repo: str, tiny_vit_repo: str) -> None:
    from hubtune import load_backbone
    from hubtune.errors import TowerError

    image = load_backbone(f"hf:{clip_repo}", precision="fp32", device="cpu", tower="image")
    text = image.tower_backbone("text")
    image_fields, text_fields = image.fingerprint_fields(), text.fingerprint_fields()
    assert image_fields["tower"] == "image" and text_fields["tower"] == "text"
    assert image.fingerprint() != text.fingerprint() and image_fields["model"] == text_fields["model"]
    assert image.dim == text.dim == 16
    assert text.load_options().tower == "text" and image.load_options().tower == "image"
    hidden = load_backbone(f"hf:{clip_repo}", precision="fp32", device="cpu", tower="text", layer="hidden_states.1")
    assert hidden.pool == "mean" and hidden.dim == 32
    with pytest.raises(Exception, match="shares a space only with --layer embeds"):
        hidden.tower_backbone("image")
    single = load_backbone(f"hf:{tiny_vit_repo}", precision="fp32", device="cpu")
    assert single.tower_backbone("image") is single and single.zeroshot_templates() == []
    with pytest.raises(TowerError, match="has no text tower"):
        single.tower_backbone("text")


def test_the_image_towers_split_into_blocks_as_their_forward(repos: dict[str, str], png: Any) -> None:
    """What ``finetune --unfreeze N`` trains the top of: CLIP and SigLIP image towers; SigLIP 2 (patch
    masks) and text towers are refused with the usual message."""
    import torch

    from hubtune import load_backbone
    from hubtune.errors import BackboneOptionError

    for family in ("clip", "siglip"):
        backbone = load_backbone(f"hf:{repos[family]}", precision="fp32", device="cpu")
        split = backbone.blocks()
        assert [name for name, _ in split.blocks] == ["vision_model.encoder.layers.0", "vision_model.encoder.layers.1"]
        batch = backbone.preprocessor.collate([backbone.preprocessor(image) for image in _images(png)])
        with torch.no_grad():
            torch.testing.assert_close(split.full(batch), backbone.forward(batch), rtol=1e-5, atol=1e-6)
        with pytest.raises(BackboneOptionError, match="cannot be partially fine-tuned"):
            backbone.tower_backbone("text").blocks()
    with pytest.raises(BackboneOptionError, match="cannot be partially fine-tuned"):
        load_backbone(f"hf:{repos['siglip2']}", precision="fp32", device="cpu").blocks()


def test_a_clip_repository_no_longer_goes_to_the_vision_adapter(clip_repo: str) -> None:
    """It had ``preprocessor_config.json``, so it was taken for an image model and failed with
    ``ValueError: You have to specify input_ids``."""
    from huggingface_hub import snapshot_download

    from hubtune import load_backbone
    from hubtune_hf.source import modality_of

    assert modality_of(Path(snapshot_download(clip_repo))) == "image+text"
    backbone = load_backbone(f"hf:{clip_repo}", precision="fp32", device="cpu")
    assert backbone.describe()["tower"] == "image" and backbone.zeroshot_templates()[0] == "a bad photo of a {}."
    assert len(backbone.zeroshot_templates()) == 80


# -- the loop --------------------------------------------------------------------------------------------------
def _cli(*args: str) -> Any:
    from click.testing import CliRunner

    from hubtune.cli import cli

    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    return json.loads(result.stdout)


def _cli_error(*args: str) -> str:
    from click.testing import CliRunner

    from hubtune.cli import cli

    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code != 0
    return result.output


@pytest.fixture(scope="module")
def clip_store(clip_repo: str, tmp_path_factory: pytest.TempPathFactory, make_image_folder: Any) -> dict[str, Any]:
    """An image folder (cat/dog) and a text table extracted with the same reference into one store."""
    root = tmp_path_factory.mktemp("two-tower")
    images = make_image_folder(root / "images", per_class=4)
    table = root / "texts.jsonl"
    table.write_text("".join(json.dumps({"text": t, "label": "long" if len(t) > 8 else "short"}) + "\n" for t in TEXTS))
    cache = root / "cache"
    ref = f"hf:{clip_repo}"
    for data, name in ((images, "pics"), (table, "texts")):
        summary = _cli("extract", ref, str(data), "--cache", str(cache), "--dataset", name, "--no-progress", *PINNED)
        assert summary["failed"] == 0 and summary["computed"] > 0
    return {"ref": ref, "cache": cache, "images": images, "table": table, "root": root}


def _stored(store_path: Path, ref: str, dataset: str) -> Any:
    from hubtune.backbone import LoadOptions
    from hubtune.store import EmbeddingStore
    from hubtune.store.lookup import find_fingerprint
    from hubtune.store.vectors import load_dataset_vectors

    with EmbeddingStore(store_path, readonly=True) as store:
        fingerprint = find_fingerprint(store, ref, dataset, LoadOptions())
        return fingerprint, store.fingerprints()[fingerprint]["fields"], load_dataset_vectors(store, fingerprint, dataset)


def test_both_towers_extract_into_one_store(clip_store: dict[str, Any], clip_repo: str) -> None:
    import torch
    from PIL import Image

    image_fp, image_fields, pics = _stored(clip_store["cache"], clip_store["ref"], "pics")
    text_fp, text_fields, texts = _stored(clip_store["cache"], clip_store["ref"], "texts")
    assert image_fields["tower"] == "image" and text_fields["tower"] == "text" and image_fp != text_fp
    model, processor = _reference(clip_repo)
    with torch.no_grad():
        pixels = processor(images=[Image.open(origin).convert("RGB") for origin in pics.origins], return_tensors="pt")
        expected = _features(model.get_image_features(**pixels))
    assert _cosines(pics.vectors, expected).min() > 1 - 1e-4  # stored as float16
    rows = [json.loads(line)["text"] for line in clip_store["table"].read_text().splitlines()]
    assert _cosines(texts.vectors, _reference_text("clip", model, processor, rows)).min() > 1 - 1e-4


def _by_hand_search(query: np.ndarray, vectors: np.ndarray, k: int) -> tuple[list[int], np.ndarray]:
    scores = _cosines(np.repeat(query[None], len(vectors), 0), vectors)
    order = np.argsort(-scores, kind="stable")[:k]
    return order.tolist(), scores[order]


def test_a_text_query_searches_images_and_an_image_query_texts(clip_store: dict[str, Any], clip_repo: str) -> None:
    import torch
    from PIL import Image

    model, processor = _reference(clip_repo)
    lookup = ["--cache", str(clip_store["cache"]), "--model", clip_store["ref"], *PINNED]
    _, _, pics = _stored(clip_store["cache"], clip_store["ref"], "pics")
    hits = _cli("search", "a photo of a cat", *lookup, "--dataset", "pics", "-k", "4")[0]
    query = _reference_text("clip", model, processor, ["a photo of a cat"])[0]
    rows, scores = _by_hand_search(query, pics.vectors.astype(np.float64), 4)
    assert [hit["row"] for hit in hits] == rows
    np.testing.assert_allclose([hit["score"] for hit in hits], scores, atol=1e-3)

    _, _, texts = _stored(clip_store["cache"], clip_store["ref"], "texts")
    picture = next(clip_store["images"].glob("dog/*.png"))
    hits = _cli("search", str(picture), *lookup, "--dataset", "texts", "-k", "2")[0]
    with torch.no_grad():
        query = _features(model.get_image_features(**processor(images=Image.open(picture).convert("RGB"),
                                                                 return_tensors="pt")))[0]
    rows, scores = _by_hand_search(query, texts.vectors.astype(np.float64), 2)
    assert [hit["row"] for hit in hits] == rows
    np.testing.assert_allclose([hit["score"] for hit in hits], scores, atol=1e-3)
    # an image dataset's own item is still an image query; row:N needs no model
    own = _cli("search", f"row:{rows[0]}", *lookup, "--dataset", "texts", "-k", "1")[0]
    assert own[0]["row"] == rows[0]


def _by_hand_zeroshot(model: Any, processor: Any, images: list[Path], classes: list[str],
                      templates: list[str], sigmoid: bool = False, max_length: bool = False) -> np.ndarray:
    """CLIP's recipe (OpenAI's ImageNet notebook): unit template vectors, mean, renormalise; then
    softmax(exp(logit_scale) * cos), or SigLIP's sigmoid(exp(logit_scale) * cos + logit_bias)."""
    import torch
    from PIL import Image

    with torch.no_grad():
        weights = []
        for name in classes:
            texts = [template.format(name) for template in templates]
            if max_length:
                ids = processor(text=texts, padding="max_length", return_tensors="pt")["input_ids"]
                vectors = model.get_text_features(input_ids=ids).pooler_output
            else:
                vectors = model.get_text_features(**processor(text=texts, padding=True, return_tensors="pt")).pooler_output
            vectors = vectors / vectors.norm(dim=-1, keepdim=True)
            mean = vectors.mean(0)
            weights.append(mean / mean.norm())
        pixels = processor(images=[Image.open(p).convert("RGB") for p in images], return_tensors="pt")
        features = model.get_image_features(**pixels).pooler_output
        features = features / features.norm(dim=-1, keepdim=True)
        logits = model.logit_scale.exp() * features @ torch.stack(weights).T
        if sigmoid:
            return torch.sigmoid(logits + model.logit_bias).numpy()
        return logits.softmax(-1).numpy()


def test_zeroshot_head_train_eval_predict(clip_store: dict[str, Any], clip_repo: str, tmp_path: Path) -> None:
    from hubtune_hf.templates import OPENAI_IMAGENET

    model, processor = _reference(clip_repo)
    head = tmp_path / "zs"
    lookup = ["--cache", str(clip_store["cache"]), "--model", clip_store["ref"], "--dataset", "pics"]
    trained = _cli("train", *lookup, "--head", "zeroshot", "--out", str(head))
    assert trained["classes"] == ["cat", "dog"] and trained["templates"] == 80 and trained["scoring"] == "softmax"
    from hubtune.heads.protocol import Head
    from hubtune.heads.use import load_head

    assert isinstance(load_head(head), Head)
    manifest = json.loads((head / "head.json").read_text())
    assert manifest["kind"] == "zeroshot" and manifest["model"]["options"]["tower"] == "image"
    assert not list(head.glob("*.pkl")) and (head / "head.safetensors").is_file()

    images = sorted(clip_store["images"].glob("*/*.png"))
    truth = np.array([0 if p.parent.name == "cat" else 1 for p in images])
    expected = _by_hand_zeroshot(model, processor, images, ["cat", "dog"], list(OPENAI_IMAGENET))
    assert trained["val_accuracy"] == pytest.approx(float((expected.argmax(1) == truth).mean()))

    report = _cli("eval", str(head), str(clip_store["images"]), "--cache", str(clip_store["cache"]))
    assert report["n"] == len(images) and report["accuracy"] == pytest.approx(trained["val_accuracy"])
    predicted = _cli("predict", str(head), *map(str, images), "--cache", str(clip_store["cache"]))
    assert [row["label"] for row in predicted] == [["cat", "dog"][i] for i in expected.argmax(1)]
    np.testing.assert_allclose([row["score"] for row in predicted], expected.max(1), atol=2e-3)

    custom = tmp_path / "zs-custom"
    _cli("train", *lookup, "--head", "zeroshot", "--out", str(custom), "--template", "a {}.",
         "--template", "a photo of my {}.")
    expected = _by_hand_zeroshot(model, processor, images[:2], ["cat", "dog"], ["a {}.", "a photo of my {}."])
    predicted = _cli("predict", str(custom), *map(str, images[:2]), "--cache", str(clip_store["cache"]))
    np.testing.assert_allclose([row["score"] for row in predicted], expected.max(1), atol=2e-3)


def test_siglip_zeroshot_scores_with_a_sigmoid(siglip_repo: str, tmp_path: Path, make_image_folder: Any) -> None:
    images = make_image_folder(tmp_path / "images", per_class=2)
    cache = tmp_path / "cache"
    ref = f"hf:{siglip_repo}"
    _cli("extract", ref, str(images), "--cache", str(cache), "--dataset", "pics", "--no-progress", *PINNED)
    trained = _cli("train", "--cache", str(cache), "--model", ref, "--dataset", "pics", "--head", "zeroshot",
                   "--out", str(tmp_path / "zs"))
    assert trained["templates"] == 1 and trained["scoring"] == "sigmoid"
    files = sorted(images.glob("*/*.png"))
    predicted = _cli("predict", str(tmp_path / "zs"), *map(str, files), "--cache", str(cache))
    model, processor = _reference(siglip_repo)
    expected = _by_hand_zeroshot(model, processor, files, ["cat", "dog"], ["This is a photo of {}."], sigmoid=True,
                                 max_length=True)
    assert [row["label"] for row in predicted] == [["cat", "dog"][i] for i in expected.argmax(1)]
    np.testing.assert_allclose([row["score"] for row in predicted], expected.max(1), atol=2e-3)


def test_zeroshot_refusals(clip_store: dict[str, Any], tiny_vit_repo: str, tmp_path: Path,
                           make_image_folder: Any) -> None:
    lookup = ["--cache", str(clip_store["cache"]), "--model", clip_store["ref"], "--dataset", "pics"]
    out = str(tmp_path / "zs")
    assert "has no {} for the class name" in _cli_error("train", *lookup, "--head", "zeroshot", "--out", out,
                                                        "--template", "a photo")
    assert "--template applies to --head zeroshot only" in _cli_error("train", *lookup, "--head", "linear",
                                                                       "--out", out, "--template", "a {}")
    images = make_image_folder(tmp_path / "images", per_class=2)
    cache = tmp_path / "cache"
    ref = f"hf:{tiny_vit_repo}"
    _cli("extract", ref, str(images), "--cache", str(cache), "--dataset", "pics", "--no-progress", *PINNED)
    error = _cli_error("train", "--cache", str(cache), "--model", ref, "--dataset", "pics", "--head", "zeroshot",
                       "--out", out, "--template", "a {}")
    assert "--head zeroshot needs a text-image model" in error and "has no text tower" in error


def test_the_installed_command_extracts_with_clip(clip_repo: str, run_hubtune: Any, tmp_path: Path,
                                                  make_image_folder: Any) -> None:
    images = make_image_folder(tmp_path / "images", per_class=2)
    cache = tmp_path / "cache"
    result = run_hubtune("extract", f"hf:{clip_repo}", str(images), "--cache", str(cache), "--dataset", "pics",
                         "--no-progress", "--json", *PINNED)
    summary = json.loads(result.stdout)
    assert summary["failed"] == 0 and summary["computed"] == 4
    assert "input_ids" not in result.stderr
    listed = json.loads(run_hubtune("models", f"hf:{clip_repo}", "--json").stdout)
    assert listed == [{"ref": f"hf:{clip_repo}", "source": "hf", "modality": "image+text"}]
