"""The whole loop, for every installed source, through the installed ``hubtune`` command.

extract -> export -> index build -> search -> train (linear, knn, mlp) -> eval -> predict ->
finetune --unfreeze 1 -> eval / predict of the fine-tuned head -> export-model -> the plain-torch
loader, on tiny models and made-up data. The cells come from the installed sources (plus the
example plugin of docs/plugins.md, installed like a third-party distribution): a source without a
recipe here fails the matrix instead of being skipped. Each recipe runs three cells:

- ``default``: default layer and pool, default (pretrained) weights from a seeded hub cache: the whole loop;
- ``layer-pool-random``: a non-default ``--layer`` and ``--pool`` with ``--weights random``;
- ``file``: ``--weights PATH.safetensors``.

The ``default`` cell runs every command as its own process of the installed console script, as a
user does; the other two run the same click group in this process (the same code without 13
interpreter starts per cell, which keeps the matrix within the suite's time). In every cell
``predict`` must equal the head applied to the exported vectors of the same inputs; the fine-tuned
head's exported model, loaded by plain torch, must give ``predict``'s classes. Precision is pinned
(fp32): nothing here depends on what ``auto`` resolves to.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from tests import openclip_fixtures, tiny_clip

pytestmark = pytest.mark.slow

HUBTUNE = Path(sys.executable).with_name("hubtune")  # the installed console script
PINNED = ["--precision", "fp32", "--device", "cpu"]
CLASSES = ("red", "blue")
TOPICS = {"red": ["apples are red", "a red fire truck", "red roses bloom", "ripe red cherries", "a red sunset sky",
                  "red wine in a glass", "the red planet mars", "strawberries taste sweet", "a red stop sign",
                  "tomatoes in the garden", "red brick walls", "cardinal birds sing"],
          "blue": ["the sky is blue", "deep blue ocean water", "blue jeans and shirts", "a blue whale swims",
                   "blueberries for breakfast", "the blue lagoon", "sapphire blue stones", "a calm blue lake",
                   "blue ink on paper", "cold blue ice", "bluebirds in spring", "navy blue uniforms"]}


@dataclass
class Recipe:
    """How one source's tiny model goes through the loop."""

    name: str
    source: str
    ref: str  # as the user types it
    modality: str
    layer_pool: tuple[str, str]  # a non-default --layer and --pool
    make_weights: Callable[[Path], None]  # a safetensors state dict for --weights PATH
    seed: Callable[[], None] = lambda: None  # put the default weights into the hub cache
    extra: list[str] = field(default_factory=list)
    zeroshot: bool = False  # a two-tower model: the default cell also trains and uses `--head zeroshot`


def _save(module: Any, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


def _recipes(test_root: Path, tiny_bert_repo: str, tiny_vit_repo: str) -> dict[str, list[Recipe]]:
    import torch

    def timm_seed() -> None:
        import timm

        from hubtune.hfhub import seed_snapshot

        folder = test_root / "build" / "matrix-timm"
        if not folder.is_dir():
            torch.manual_seed(21)
            timm.models.save_for_hf(timm.create_model("test_resnet.r160_in1k").eval(), str(folder),
                                    safe_serialization="both")
            (folder / "pytorch_model.bin").unlink(missing_ok=True)
            seed_snapshot("timm/test_resnet.r160_in1k", folder)

    def torchvision_seed() -> None:
        from torchvision.models import ResNet18_Weights, get_model

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
        if not path.is_file():
            torch.manual_seed(22)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(get_model("resnet18", weights=None).state_dict(), path)

    def hf_weights(repo: str) -> Callable[[Path], None]:
        def make(path: Path) -> None:
            from huggingface_hub import snapshot_download
            from transformers import AutoConfig, AutoModel

            torch.manual_seed(23)
            _save(AutoModel.from_config(AutoConfig.from_pretrained(snapshot_download(repo))), path)
        return make

    def timm_weights(path: Path) -> None:
        import timm

        torch.manual_seed(24)
        _save(timm.create_model("test_resnet.r160_in1k"), path)

    def torchvision_weights(path: Path) -> None:
        from torchvision.models import get_model

        torch.manual_seed(25)
        _save(get_model("resnet18", weights=None), path)

    def example_weights(ref: str) -> Callable[[Path], None]:
        def make(path: Path) -> None:
            import hubtune

            _save(hubtune.load_backbone(ref, weights="random:26", device="cpu").model, path)
        return make

    return {
        "hf": [Recipe("hf-text", "hf", f"hf:{tiny_bert_repo}", "text", ("hidden_states.1", "max"),
                      hf_weights(tiny_bert_repo)),
               Recipe("hf-vision", "hf", f"hf:{tiny_vit_repo}", "image", ("hidden_states.1", "mean"),
                      hf_weights(tiny_vit_repo)),
               Recipe("hf-clip", "hf", f"hf:{tiny_clip.REPO}", "image", ("hidden_states.1", "max"),
                      hf_weights(tiny_clip.REPO), lambda: tiny_clip.tiny_clip_repo(test_root), zeroshot=True)],
        "timm": [Recipe("timm", "timm", "timm:test_resnet.r160_in1k", "image", ("features", "gem"), timm_weights,
                        timm_seed)],
        "torchvision": [Recipe("torchvision", "torchvision", "torchvision:resnet18", "image", ("layer3", "max"),
                               torchvision_weights, torchvision_seed)],
        "open_clip": [Recipe("open_clip", "open_clip", openclip_fixtures.MATRIX_REF, "image",
                             openclip_fixtures.MATRIX_LAYER_POOL, openclip_fixtures.matrix_weights,
                             lambda: openclip_fixtures.matrix_seed(test_root), zeroshot=True)],
        "example": [Recipe("example-image", "example", "example:tiny", "image", ("stem", "max"),
                           example_weights("example:tiny")),
                    Recipe("example-text", "example", "example:chars", "text", ("tokens", "cls"),
                           example_weights("example:chars"))],
    }


NAMES = ["hf-text", "hf-vision", "hf-clip", "timm", "torchvision", "open_clip", "example-image", "example-text"]
CELLS = ["default", "layer-pool-random", "file"]


# -- data ---------------------------------------------------------------------------------------------------
def _image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(3)
    colours = {"red": (200, 40, 40), "blue": (40, 40, 200)}
    for split, count in (("train", 12), ("test", 4)):
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(np.array(colours[label]) + rng.integers(-50, 50, (40, 40, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{label}{i}.png")
    return root


def _text_files(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", slice(0, 9)), ("test", slice(9, 12))):
        with open(root / f"{split}.jsonl", "w") as handle:
            for label in CLASSES:
                for text in TOPICS[label][rows]:
                    handle.write(json.dumps({"text": text, "label": label}) + "\n")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix-data")
    return {"image": _image_folder(root / "images"), "text": _text_files(root / "texts")}


def _splits(recipe: Recipe, data: dict[str, Path]) -> tuple[Path, Path, list[str]]:
    """(train DATA, test DATA, inputs for predict: items of the train data, so they are exported)."""
    root = data[recipe.modality]
    if recipe.modality == "image":
        inputs = [str(root / "train" / label / f"{label}{i}.png") for label in CLASSES for i in (0, 5)]
        return root / "train", root / "test", inputs
    inputs = [TOPICS[label][i] for label in CLASSES for i in (0, 4)]
    return root / "train.jsonl", root / "test.jsonl", inputs


# -- the installed command ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def example_plugin_files() -> dict[str, str]:
    """docs/plugins.md's example plugin: every fenced block whose first line is ``# file: PATH``."""
    import re

    text = (Path(__file__).resolve().parents[1] / "docs" / "plugins.md").read_text()
    blocks = (match.group(1) for match in re.finditer(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL))
    return {marker.group(1): body for body in blocks if (marker := re.match(r"# file: (\S+)[ \t]*\n", body))}


@pytest.fixture(scope="module")
def example_site(tmp_path_factory: pytest.TempPathFactory, example_plugin_files: dict[str, str]) -> Path:
    """docs/plugins.md's example plugin, pip-installed into its own folder (put on PYTHONPATH)."""
    folder = tmp_path_factory.mktemp("matrix-example")
    source, site = folder / "src", folder / "site"
    for relative, text in example_plugin_files.items():
        (source / relative).parent.mkdir(parents=True, exist_ok=True)
        (source / relative).write_text(text)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "--target", str(site), str(source)],
                   check=True, capture_output=True)
    return site


@pytest.fixture(scope="module")
def env(example_site: Path) -> dict[str, str]:
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(example_site), environment.get("PYTHONPATH")]))
    environment.pop("HUBTUNE_LOAD_PLUGINS", None)
    return environment


def _hubtune(env: dict[str, str], *args: str) -> Any:
    """``hubtune ARGS --json`` as its own process of the installed command; the parsed document."""
    result = subprocess.run([str(HUBTUNE), *args, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"hubtune {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return json.loads(result.stdout)


@pytest.fixture
def in_process(example_site: Path) -> Any:
    """``hubtune ARGS --json`` through the same click group, in this process (the example plugin importable)."""
    from click.testing import CliRunner

    from hubtune import plugins
    from hubtune.cli import cli

    sys.path.insert(0, str(example_site))
    plugins.reset()

    def run(env: dict[str, str], *args: str) -> Any:
        result = CliRunner().invoke(cli, [*args, "--json"])
        assert result.exit_code == 0, f"hubtune {' '.join(args)} exited {result.exit_code}:\n{result.output[-3000:]}"
        return json.loads(result.stdout)

    yield run
    sys.path.remove(str(example_site))
    plugins.reset()


def test_every_installed_source_has_a_recipe(env: dict[str, str], test_root: Path) -> None:
    installed = {row["name"] for row in _hubtune(env, "sources")}
    recipes = _recipes(test_root, "unused", "unused")
    assert installed <= set(recipes), f"add a recipe for {sorted(installed - set(recipes))} to this matrix"
    assert {"hf", "timm", "torchvision", "example"} <= installed
    assert sorted(r.name for rs in recipes.values() for r in rs) == sorted(NAMES)


# -- one cell ------------------------------------------------------------------------------------------------
def _predict_equals_head_on_exported(head_dir: Path, predicted: list[dict], exported: Path, inputs: list[str],
                                     recipe: Recipe, train: Path) -> None:
    """``predict``'s labels and scores are the head applied to the exported vectors of the same items."""
    import hubtune.heads.use as use

    vectors = np.load(exported / "embeddings.npy")
    items = [json.loads(line) for line in (exported / "items.jsonl").read_text().splitlines()]
    if recipe.modality == "image":
        where = {Path(item["origin"]).resolve(): row for row, item in enumerate(items)}
        rows = [where[Path(name).resolve()] for name in inputs]
    else:
        texts = [json.loads(line)["text"] for line in train.read_text().splitlines()]
        rows = [texts.index(text) for text in inputs]
    head = use.load_head(head_dir)
    probabilities = head.probabilities(vectors[rows], head.model["fingerprint"])
    assert [p["label"] for p in predicted] == [head.classes[int(row.argmax())] for row in probabilities]
    np.testing.assert_allclose([p["score"] for p in predicted], probabilities.max(1), atol=1e-5)


def _loader_agrees(model_file: Path, recipe: Recipe, inputs: list[str], predicted: list[dict], env: dict) -> None:
    """The exported model, loaded by plain torch (hubtune not imported), classifies as ``predict`` did."""
    from safetensors.torch import save_file

    from hubtune.heads.use import head_backbone, load_head

    backbone = head_backbone(load_head(model_file.parent.parent / "ft"))
    raws = [Path(name).read_bytes() for name in inputs] if recipe.modality == "image" else inputs
    batch = backbone.preprocessor.collate(backbone.preprocessor.prepare_many(raws))
    names = ["pixel_values"] if recipe.modality == "image" else ["input_ids", "attention_mask"]
    save_file({name: batch[name].contiguous() for name in names}, str(model_file.parent / "batch.safetensors"))
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(model_file.parent)!r})\n"
        "import torch\nfrom safetensors.torch import load_file\nfrom hubtune_loader import load\n"
        f"model, meta = load({str(model_file)!r})\n"
        f"batch = load_file({str(model_file.parent / 'batch.safetensors')!r})\n"
        f"with torch.no_grad():\n    p = model(*[batch[n] for n in {names!r}]).softmax(1)\n"
        "print(json.dumps({'labels': [meta['classes'][int(i)] for i in p.argmax(1)], 'scores': p.max(1).values.tolist(),"
        " 'hubtune': 'hubtune' in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not loaded["hubtune"], "the exported model's loader imported hubtune"
    assert loaded["labels"] == [p["label"] for p in predicted]
    np.testing.assert_allclose(loaded["scores"], [p["score"] for p in predicted], atol=2e-2)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", NAMES)
def test_loop(name: str, cell: str, env: dict[str, str], data: dict[str, Path], tmp_path: Path, test_root: Path,
              tiny_bert_repo: str, tiny_vit_repo: str, in_process: Any) -> None:
    hubtune = _hubtune if cell == "default" else in_process
    recipe = next(r for rs in _recipes(test_root, tiny_bert_repo, tiny_vit_repo).values() for r in rs if r.name == name)
    recipe.seed()
    train, test, inputs = _splits(recipe, data)
    model = [*PINNED]
    if cell == "layer-pool-random":
        model += ["--layer", recipe.layer_pool[0], "--pool", recipe.layer_pool[1], "--weights", "random:5"]
    elif cell == "file":
        recipe.make_weights(tmp_path / "weights.safetensors")
        model += ["--weights", str(tmp_path / "weights.safetensors")]
    cache = str(tmp_path / "cache")
    lookup = ["--cache", cache, "--model", recipe.ref, "--dataset", "tr", *model]

    summary = hubtune(env, "extract", recipe.ref, str(train), "--cache", cache, "--dataset", "tr", *model)
    assert summary["failed"] == 0 and summary["computed"] == summary["total"] > 0
    exported = hubtune(env, "export", *lookup, "--out", str(tmp_path / "export"))
    assert exported["rows"] == summary["total"] and exported["dim"] > 0
    if cell == "default":
        assert hubtune(env, "index", "build", *lookup)["rows"] == summary["total"]
        hits = hubtune(env, "search", *lookup, "-k", "3", inputs[0])
        assert len(hits) == 1 and len(hits[0]) == 3 and hits[0][0]["score"] == pytest.approx(1.0, abs=1e-2)
    for kind in (("linear", "knn", "mlp") if cell != "file" else ("knn",)):
        head = tmp_path / kind
        trained = hubtune(env, "train", *lookup, "--head", kind, "--out", str(head))
        assert sorted(trained["classes"]) == sorted(CLASSES)
        if cell != "default" or kind == "linear":  # each eval loads the model: one per process-per-command cell
            report = hubtune(env, "eval", str(head), str(test), "--cache", cache)
            assert report["n"] == (8 if recipe.modality == "image" else 6) and 0 <= report["accuracy"] <= 1
        predicted = hubtune(env, "predict", str(head), *inputs, "--cache", cache)
        _predict_equals_head_on_exported(head, predicted, tmp_path / "export", inputs, recipe, train)
    if cell != "default":
        return
    if recipe.zeroshot:  # no training: class vectors from the text tower, used like any head
        head = tmp_path / "zeroshot"
        trained = hubtune(env, "train", *lookup, "--head", "zeroshot", "--template", "a {} thing", "--out", str(head))
        assert sorted(trained["classes"]) == sorted(CLASSES)
        predicted = hubtune(env, "predict", str(head), *inputs, "--cache", cache)
        _predict_equals_head_on_exported(head, predicted, tmp_path / "export", inputs, recipe, train)
    finetuned = hubtune(env, "finetune", recipe.ref, str(train), "--cache", cache, "--unfreeze", "1",
                         "--out", str(tmp_path / "ft"), "--epochs", "2", "--no-progress", *model)
    assert finetuned["unfrozen"] == 1
    report = hubtune(env, "eval", str(tmp_path / "ft"), str(test), "--cache", cache)
    assert report["n"] == (8 if recipe.modality == "image" else 6)
    predicted = hubtune(env, "predict", str(tmp_path / "ft"), *inputs, "--cache", cache)
    model_file = tmp_path / "model" / "model.safetensors"
    hubtune(env, "export-model", str(tmp_path / "ft"), "--out", str(model_file))
    _loader_agrees(model_file, recipe, inputs, predicted, env)
