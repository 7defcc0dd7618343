"""The ``open_clip`` source: parity with open_clip's own encode_image / encode_text, both reference forms,
the safe-file policy, both towers, blocks, and the plugin's behaviour without open_clip installed.

Tiny models only (``tests/openclip_fixtures.py``: an architecture registered with open_clip and Hub-style
repositories seeded into the hub cache); nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubtune.errors import BackboneOptionError, ModelNotFoundError, OfflineError, UnsafeModelError
from tests.openclip_fixtures import (
    BIN_REPO, SIGLIP_REPO, TINY_ARCH, TINY_TAG, register_tiny_arch, register_tiny_tag, save_weights, seed_tiny_repo,
    tiny_model,
)

pytest.importorskip("open_clip")

TEXTS = ["a photo of a cat", "a red fire truck", "Blue ocean water!", "the quick brown fox " * 40]
FP32 = {"device": "cpu", "precision": "fp32"}


def invoke(*args: str) -> Any:
    from click.testing import CliRunner

    from hubtune.cli import cli

    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def load(ref: str, **options: Any) -> Any:
    import hubtune

    return hubtune.load_backbone(ref, **{**FP32, **options})


@pytest.fixture(scope="module")
def repo(test_root: Path) -> str:
    return seed_tiny_repo(test_root)


@pytest.fixture(scope="module")
def arch(test_root: Path) -> str:
    return register_tiny_arch(test_root)


@pytest.fixture(scope="module")
def reference(repo: str) -> tuple[Any, Any, Any]:
    """open_clip's own model, validation transform and tokenizer for the repository (its own loading code)."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"hf-hub:{repo}")
    return model.eval(), preprocess, open_clip.get_tokenizer(f"hf-hub:{repo}")


def _images(folder: Path, rgb_images: list[bytes]) -> Path:
    for index, data in enumerate(rgb_images):
        (folder / "a").mkdir(parents=True, exist_ok=True)
        (folder / "a" / f"{index}.png").write_bytes(data)
    return folder


def test_image_tower_matches_encode_image_through_extract_and_export(
        repo: str, reference: tuple, rgb_images: list[bytes], tmp_path: Path, figure: Any) -> None:
    import io

    import torch
    from PIL import Image

    data, cache = _images(tmp_path / "images", rgb_images), str(tmp_path / "cache")
    ref = f"open_clip:hf-hub:{repo}"
    summary = invoke("extract", ref, str(data), "--cache", cache, "--precision", "fp32", "--device", "cpu",
                     "--stored-dtype", "float32")
    assert summary["computed"] == len(rgb_images) and summary["failed"] == 0
    invoke("export", "--cache", cache, "--model", ref, "--dataset", "images", "--out", str(tmp_path / "out"))
    stored = np.load(tmp_path / "out" / "embeddings.npy")
    origins = [json.loads(line)["origin"] for line in (tmp_path / "out" / "items.jsonl").read_text().splitlines()]
    model, preprocess, _ = reference
    images = [Image.open(io.BytesIO(rgb_images[int(Path(o).stem)])).convert("RGB") for o in origins]
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(image) for image in images])).numpy()
    figure("openclip image parity", f"min cosine {cosines(stored, expected).min():.8f}, "
           f"max |diff| {np.abs(stored - expected).max():.2e}")
    assert cosines(stored, expected).min() > 1 - 1e-4
    np.testing.assert_allclose(stored, expected, atol=1e-4)


def test_text_tower_matches_encode_text(repo: str, reference: tuple, figure: Any) -> None:
    import torch

    backbone = load(f"open_clip:hf-hub:{repo}", tower="text")
    assert (backbone.modality, backbone.tower, backbone.layer, backbone.pool) == ("text", "text", "embeds", "native")
    model, _, tokenizer = reference
    with torch.no_grad():
        expected = model.encode_text(tokenizer(TEXTS)).numpy()
    vectors = backbone.embed(TEXTS)
    figure("openclip text parity", f"min cosine {cosines(vectors, expected).min():.8f}, "
           f"max |diff| {np.abs(vectors - expected).max():.2e}")
    assert cosines(vectors, expected).min() > 1 - 1e-4
    np.testing.assert_allclose(vectors, expected, atol=1e-4)
    assert backbone.preprocess_config["context_length"] == 16 and backbone.preprocess_config["tokenizer"] == "SimpleTokenizer"


def test_text_data_picks_the_text_tower(repo: str, tmp_path: Path) -> None:
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": text, "label": i % 2}) + "\n" for i, text in enumerate(TEXTS)))
    cache = str(tmp_path / "cache")
    ref = f"open_clip:hf-hub:{repo}"
    texts = invoke("extract", ref, str(path), "--cache", cache, "--precision", "fp32", "--device", "cpu")
    assert texts["computed"] == len(TEXTS) and texts["failed"] == 0
    from hubtune.store import EmbeddingStore

    fields = EmbeddingStore(cache, readonly=True).fingerprints()[texts["fingerprint"]]["fields"]
    assert (fields["tower"], fields["preprocess"]["tokenizer"]) == ("text", "SimpleTokenizer")


def test_other_tower_shares_the_loaded_model(repo: str) -> None:
    image = load(f"open_clip:hf-hub:{repo}")
    text = image.tower_backbone("text")
    assert text.built is image.built and text.modality == "text" and image.tower_backbone("image") is image
    assert text.revision == image.revision and text.fingerprint() != image.fingerprint()
    assert text.model.transformer is image.built.model.transformer  # the same modules: nothing loaded twice
    assert image.logit_scale() == pytest.approx(float(image.built.model.logit_scale.detach().exp()))
    assert image.logit_bias() is None


def test_arch_at_tag_resolves_through_the_pretrained_table(test_root: Path, repo: str, reference: tuple,
                                                           rgb_images: list[bytes]) -> None:
    import io

    import open_clip
    import torch
    from PIL import Image

    ref = register_tiny_tag(test_root)
    backbone = load(ref)
    tag, _, commit = backbone.revision.partition("/")
    assert tag == TINY_TAG and len(commit) == 40 and str(backbone.ref) == f"open_clip:{TINY_ARCH}@{TINY_TAG}/{commit}"
    assert load(str(backbone.ref)).fingerprint() == backbone.fingerprint()  # the reported reference loads it again
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_ARCH, pretrained=TINY_TAG)
    image = Image.open(io.BytesIO(rgb_images[1])).convert("RGB")
    with torch.no_grad():
        expected = model.eval().encode_image(preprocess(image)[None]).numpy()
    np.testing.assert_allclose(backbone.embed([rgb_images[1]]), expected, atol=1e-5)
    assert backbone.preprocess_config["mean"] == [0.5, 0.5, 0.5]  # the tag's preprocessing, not open_clip's default


@pytest.mark.parametrize("ref, options, error, match", [
    ("open_clip:ViT-B-32@nonexistent_tag", {}, ModelNotFoundError, r"no pretrained tag 'nonexistent_tag'.*laion2b_s34b_b79k"),
    ("open_clip:ViT-B-33", {"weights": "random"}, ModelNotFoundError, r"no architecture 'ViT-B-33'.*ViT-B-32"),
    ("open_clip:ViT-B-32", {}, ModelNotFoundError, r"names an architecture.*open_clip:ViT-B-32@openai"),
    ("open_clip:coca_ViT-B-32@laion2b_s13b_b90k", {}, ModelNotFoundError, r"CoCa"),
    ("open_clip:ViT-B-32@laion2b_s34b_b79k", {"weights": "random"}, BackboneOptionError, r"drop it with --weights random"),
    ("open_clip:ViT-B-32@laion2b_s34b_b79k", {}, OfflineError,
     r"laion/CLIP-ViT-B-32-laion2B-s34B-b79K.*hubtune pull open_clip:ViT-B-32@laion2b_s34b_b79k"),
    ("open_clip:hf-hub:hubtune-test/no-such-repo", {}, OfflineError, r"not in the local hub cache"),
    ("open_clip:hf-hub:hubtune-test/tiny-vit", {}, ModelNotFoundError, r"no open_clip_config.json"),
])
def test_refused_references(ref: str, options: dict, error: type, match: str, tiny_vit_repo: str) -> None:
    with pytest.raises(error, match=match):
        load(ref, **options)


def test_accepted_references(arch: str, repo: str, test_root: Path) -> None:
    from hubtune.hfhub import cached_commit

    commit = cached_commit(repo)
    random = load(f"open_clip:{arch}", weights="random:3")
    assert random.revision is None and random.weights == "random:3" and random.dim == 16
    pinned = load(f"open_clip:hf-hub:{repo}@{commit}")
    assert pinned.revision == commit and pinned.fingerprint() == load(f"open_clip:hf-hub:{repo}").fingerprint()
    tag_ref = register_tiny_tag(test_root)
    assert load(f"{tag_ref}/{commit}").revision == f"{TINY_TAG}/{commit}"


def test_random_and_file_weights(arch: str, rgb_images: list[bytes], tmp_path: Path) -> None:
    ref = f"open_clip:{arch}"
    first, again, other = (load(ref, weights=w).embed(rgb_images) for w in ("random:1", "random:1", "random:2"))
    assert np.array_equal(first, again) and not np.allclose(first, other)
    model = tiny_model(31)
    save_weights(model, tmp_path / "w.safetensors")
    backbone = load(ref, weights=str(tmp_path / "w.safetensors"))
    assert backbone.weights.startswith("file-sha256:")
    import torch

    with torch.no_grad():
        expected = model.encode_image(backbone.preprocessor.collate([backbone.preprocessor(rgb_images[0])])["pixel_values"])
    np.testing.assert_allclose(backbone.embed(rgb_images[:1]), expected.numpy(), atol=1e-5)


def test_a_pickle_only_repository_is_refused(test_root: Path) -> None:
    seed_tiny_repo(test_root, BIN_REPO, weights="bin")
    with pytest.raises(UnsafeModelError, match="open_clip_model.safetensors.*does not unpickle"):
        load(f"open_clip:hf-hub:{BIN_REPO}")
    # random weights need only the repository's config: allowed, and the .bin is never read
    assert load(f"open_clip:hf-hub:{BIN_REPO}", weights="random").dim == 16


def test_blocks_split_reproduces_the_image_forward(repo: str, rgb_images: list[bytes]) -> None:
    import torch

    backbone = load(f"open_clip:hf-hub:{repo}")
    split = backbone.blocks()
    assert [name for name, _ in split.blocks] == ["resblocks.0", "resblocks.1"] and split.layer == "embeds"
    batch = backbone.to_device(backbone.preprocessor.collate([backbone.preprocessor(x) for x in rgb_images]))
    with torch.no_grad():
        torch.testing.assert_close(split.neck(split.run(split.modules, *split.stem(batch)), None),
                                   backbone.forward(batch), rtol=0, atol=1e-6)
        torch.testing.assert_close(split.full(batch), backbone.forward(batch), rtol=0, atol=1e-6)
    trained = {id(p) for module in split.neck_modules for p in module.parameters()}
    assert id(backbone.model.visual.proj) in trained  # the projection trains with the neck
    with pytest.raises(BackboneOptionError, match="only the image tower"):
        backbone.tower_backbone("text").blocks()


def test_tokens_layers(repo: str, rgb_images: list[bytes]) -> None:
    ref = f"open_clip:hf-hub:{repo}"
    image = load(ref, layer="tokens")
    assert (image.pool, image.dim) == ("cls", 32) and load(ref, layer="tokens", pool="none").dim == (1 + 16) * 32
    text = load(ref, layer="tokens", tower="text")
    assert (text.pool, text.dim) == ("mean", 32) and "cls" not in text.layer_pools.names
    with pytest.raises(BackboneOptionError, match="does not apply"):
        load(ref, layer="tokens", tower="text", pool="cls")
    assert load(ref, pool="native").layers == ["embeds", "tokens"]


def test_a_long_text_is_cut_before_tokenising(repo: str) -> None:
    backbone = load(f"open_clip:hf-hub:{repo}", tower="text")
    long = "word " * 20_000
    sample = backbone.preprocessor(long)
    assert np.array_equal(sample["input_ids"], backbone.preprocessor.tokenizer([long])[0])
    assert backbone.preprocessor._bounded(long) != long


def test_models_lists_the_pretrained_table() -> None:
    rows = invoke("models", "--source", "open_clip")
    refs = {row["ref"] for row in rows}
    assert "open_clip:ViT-B-32@laion2b_s34b_b79k" in refs and all(row["modality"] == "image+text" for row in rows)
    assert not any("coca" in ref for ref in refs)
    only = invoke("models", "open_clip:ViT-B-32@*")
    assert only and all(row["ref"].startswith("open_clip:ViT-B-32@") for row in only)
    assert "open_clip" in {row["name"] for row in invoke("sources")}


def test_without_open_clip_the_source_registers_and_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from hubtune import plugins
    from hubtune_openclip.source import OpenClipMissingError

    monkeypatch.setitem(sys.modules, "open_clip", None)  # `import open_clip` raises ImportError
    plugins.reset()
    assert "open_clip" in {row["name"] for row in invoke("sources")}
    with pytest.raises(OpenClipMissingError, match=r"pip install 'hubtune\[openclip\]'"):
        load("open_clip:ViT-B-32@laion2b_s34b_b79k")
    assert invoke("models", "--source", "open_clip") == []


def test_zeroshot_head_matches_open_clips_zero_shot_classifier(repo: str, reference: tuple, rgb_images: list[bytes],
                                                               tmp_path: Path) -> None:
    """``train --head zeroshot`` (open_clip's 80 ImageNet templates) then ``predict``: the probabilities are
    softmax(exp(logit_scale) * cos) against open_clip's own ``build_zero_shot_classifier``."""
    import io

    import open_clip
    import torch
    from PIL import Image

    data, cache = tmp_path / "images", str(tmp_path / "cache")
    for index, raw in enumerate(rgb_images):
        (data / ("cat" if index % 2 else "dog")).mkdir(parents=True, exist_ok=True)
        (data / ("cat" if index % 2 else "dog") / f"{index}.png").write_bytes(raw)
    ref = f"open_clip:hf-hub:{repo}"
    invoke("extract", ref, str(data), "--cache", cache, "--precision", "fp32", "--device", "cpu")
    trained = invoke("train", "--cache", cache, "--model", ref, "--dataset", "images", "--head", "zeroshot",
                     "--out", str(tmp_path / "zs"))
    assert (trained["templates"], trained["scoring"], trained["classes"]) == (80, "softmax", ["cat", "dog"])
    predicted = invoke("predict", str(tmp_path / "zs"), *(str(p) for p in sorted(data.rglob("*.png"))),
                       "--cache", cache)

    model, preprocess, tokenizer = reference
    weights = open_clip.build_zero_shot_classifier(model, tokenizer, ["cat", "dog"], open_clip.OPENAI_IMAGENET_TEMPLATES)
    images = [Image.open(io.BytesIO(rgb_images[int(Path(row["input"]).stem)])).convert("RGB") for row in predicted]
    with torch.no_grad():
        features = model.encode_image(torch.stack([preprocess(image) for image in images]), normalize=True)
        expected = (model.logit_scale.exp() * features @ weights).softmax(1).numpy()
    assert [row["label"] for row in predicted] == [["cat", "dog"][i] for i in expected.argmax(1)]
    np.testing.assert_allclose([row["score"] for row in predicted], expected.max(1), atol=1e-3)  # fp16 vectors


def test_siglip_style_models_score_with_a_sigmoid(test_root: Path) -> None:
    image = load(f"open_clip:hf-hub:{seed_tiny_repo(test_root, SIGLIP_REPO)}")
    scoring, scale, bias = image.zeroshot_scoring()
    assert (scoring, bias) == ("sigmoid", -10.0) and scale == pytest.approx(10.0)
    assert image.zeroshot_templates()[0] == "a bad photo of a {}." and len(image.zeroshot_templates()) == 80


def test_the_other_tower_follows_dim_and_refuses_a_token_layer(repo: str) -> None:
    image = load(f"open_clip:hf-hub:{repo}", dim=8)
    text = image.tower_backbone("text")
    assert (text.layer, text.truncate_dim, text.dim) == ("embeds", 8, 8)
    with pytest.raises(BackboneOptionError, match="not in the space"):
        load(f"open_clip:hf-hub:{repo}", layer="tokens").tower_backbone("text")


def test_an_architecture_with_a_hub_tokenizer(test_root: Path, tiny_bert_repo: str) -> None:
    """A config naming a Hugging Face tokenizer (as SigLIP's do): its files come through the safe snapshot
    and open_clip's own HFTokenizer reads them offline; the text vectors are open_clip's."""
    import open_clip
    import torch

    from tests.openclip_fixtures import TINY_CONFIG

    name = "hubtune-tiny-clip-hftok"
    path = test_root / "build" / "openclip-arch" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    text_cfg = {**TINY_CONFIG["text_cfg"], "vocab_size": 30522, "hf_tokenizer_name": tiny_bert_repo, "pool_type": "last"}
    path.write_text(json.dumps({**TINY_CONFIG, "text_cfg": text_cfg}))
    open_clip.add_model_config(path)
    backbone = load(f"open_clip:{name}", weights="random:4", tower="text")
    config = backbone.preprocess_config
    assert (config["tokenizer"], config["hf_tokenizer"], len(config["tokenizer_revision"])) == ("HFTokenizer", tiny_bert_repo, 40)
    torch.manual_seed(4)
    model = open_clip.create_model(name).eval()
    with torch.no_grad():
        expected = model.encode_text(open_clip.get_tokenizer(name)(TEXTS)).numpy()
    np.testing.assert_allclose(backbone.embed(TEXTS), expected, atol=1e-5)


def test_pull_reports_the_pinned_reference(test_root: Path, repo: str) -> None:
    from hubtune.hfhub import cached_commit

    commit = cached_commit(repo)
    pulled = invoke("pull", f"open_clip:hf-hub:{repo}")
    assert (pulled["ref"], pulled["revision"]) == (f"open_clip:hf-hub:{repo}@{commit}", commit)
    tagged = invoke("pull", register_tiny_tag(test_root))
    assert tagged["ref"] == f"open_clip:{TINY_ARCH}@{TINY_TAG}/{commit}" and tagged["revision"] == f"{TINY_TAG}/{commit}"
    with pytest.raises(UnsafeModelError):
        from hubtune.api import pull

        pull(f"open_clip:hf-hub:{seed_tiny_repo(test_root, BIN_REPO, weights='bin')}")


def test_a_text_query_searches_the_image_vectors(repo: str, reference: tuple, rgb_images: list[bytes],
                                                tmp_path: Path) -> None:
    """``search`` over an image dataset embeds a text query with the text tower (open_clip's encode_text)."""
    import torch

    data, cache = _images(tmp_path / "images", rgb_images), str(tmp_path / "cache")
    ref = f"open_clip:hf-hub:{repo}"
    pinned = ["--precision", "fp32", "--device", "cpu"]
    invoke("extract", ref, str(data), "--cache", cache, "--stored-dtype", "float32", *pinned)
    hits = invoke("search", "a red fire truck", "--cache", cache, "--model", ref, "--dataset", "images", "-k", "3",
                  *pinned)[0]
    invoke("export", "--cache", cache, "--model", ref, "--dataset", "images", "--out", str(tmp_path / "out"))
    stored = np.load(tmp_path / "out" / "embeddings.npy")
    model, _, tokenizer = reference
    with torch.no_grad():
        query = model.encode_text(tokenizer(["a red fire truck"])).numpy()
    scores = cosines(np.repeat(query, len(stored), 0), stored)
    assert [hit["row"] for hit in hits] == np.argsort(-scores, kind="stable")[:3].tolist()
    np.testing.assert_allclose([hit["score"] for hit in hits], np.sort(scores)[::-1][:3], atol=1e-4)
