"""Bad option values and mismatched inputs are refused up front with a one-line error that names
the fix, before any measuring or extracting (found by an acceptance pass over the installed wheel)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image


@pytest.mark.parametrize("sizes", ["0", "-1", "1,x", ","])
def test_bench_batch_sizes_must_be_positive_integers(run_hubtune, sizes: str) -> None:
    result = run_hubtune("bench", "timm:test_resnet", "--weights", "random", "--batch-sizes", sizes, check=False)
    assert result.returncode == 2
    assert "expected a comma list of positive integers" in result.stderr and "Traceback" not in result.stderr


def test_bench_creates_the_folders_of_its_outputs(run_hubtune, tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder"
    result = run_hubtune("bench", "timm:test_resnet", "--weights", "random", "--batch-sizes", "1", "--iters", "1",
                         "--repeats", "1", "--warmup", "0", "--csv", str(out / "rows.csv"), "--json")
    assert json.loads(result.stdout)[0]["items_per_s"] > 0
    assert (out / "rows.csv").read_text().startswith("model,")


@pytest.mark.parametrize("option, value", [("--C", "nan"), ("--C", "-1"), ("--C", "0"), ("--C", "inf"),
                                           ("--temperature", "nan"), ("--temperature", "0")])
def test_train_numbers_must_be_finite_and_positive(run_hubtune, tmp_path: Path, option: str, value: str) -> None:
    result = run_hubtune("train", "--cache", str(tmp_path), "--model", "timm:test_resnet", "--dataset", "d",
                         "--head", "linear", "--out", str(tmp_path / "head"), option, value, check=False)
    assert result.returncode == 2 and "expected a finite number above 0" in result.stderr


def test_extract_refuses_a_model_of_the_other_modality(run_hubtune, tmp_path: Path) -> None:
    table = tmp_path / "texts.jsonl"
    table.write_text('{"text": "a sentence"}\n')
    images = tmp_path / "images" / "cats"
    images.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(images / "a.png")
    cache = str(tmp_path / "cache")
    texts = run_hubtune("extract", "timm:test_resnet", "--weights", "random", str(table), "--cache", cache, check=False)
    assert texts.returncode == 2 and "holds texts but timm:test_resnet is an image model" in texts.stderr
    pictures = run_hubtune("extract", "hf:sentence-transformers/all-MiniLM-L6-v2", str(tmp_path / "images"),
                           "--cache", cache, check=False)
    assert pictures.returncode == 2 and "holds images but hf:sentence-transformers/all-MiniLM-L6-v2" in pictures.stderr
    assert "Traceback" not in texts.stderr + pictures.stderr


@pytest.mark.parametrize("pattern, expected", [("hf:sentence*", "hf:sentence-transformers/all-MiniLM-L6-v2"),
                                               ("hf:*", "hf:sentence-transformers/all-MiniLM-L6-v2"),
                                               ("timm:test_vit*", "timm:test_vit.r160_in1k")])
def test_models_pattern_may_name_its_source(run_hubtune, pattern: str, expected: str) -> None:
    rows = json.loads(run_hubtune("models", pattern, "--json", env={"HF_HUB_OFFLINE": "1"}).stdout)
    assert expected in [row["ref"] for row in rows]
    assert {row["source"] for row in rows} == {pattern.split(":")[0]}
    clash = run_hubtune("models", pattern, "--source", "torchvision", check=False)
    assert clash.returncode == 2 and "names the source" in clash.stderr


def test_lookup_with_weights_unset_finds_vectors_of_any_weights(make_image_folder, tmp_path: Path) -> None:
    """DESIGN: options left unset match any value; --weights too, unless default-weight vectors exist."""
    from hubtune.backbone import LoadOptions
    from hubtune.errors import HubtuneError
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore
    from hubtune.store.lookup import find_fingerprint

    data = make_image_folder(tmp_path / "images", per_class=2)
    with EmbeddingStore(tmp_path / "store") as store:
        made = extract("timm:test_resnet", data, store, dataset_name="pets", progress=False,
                       options=LoadOptions(weights="random:3", device="cpu", precision="fp32")).fingerprint
        assert find_fingerprint(store, "timm:test_resnet", "pets", LoadOptions()) == made
        with pytest.raises(HubtuneError, match="no vectors of dataset 'pets'"):  # a different seed asked for
            find_fingerprint(store, "timm:test_resnet", "pets", LoadOptions(weights="random:4"))


@pytest.mark.parametrize("ref, pull", [("timm:test_resnet@abc", "hubtune pull timm:test_resnet@abc"),
                                       ("torchvision:resnet18", "hubtune pull torchvision:resnet18@IMAGENET1K_V1")])
def test_offline_miss_names_the_pull_and_random_weights(run_hubtune, tmp_path: Path, ref: str, pull: str) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    result = run_hubtune("info", ref, env=env, check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"`{pull}`" in result.stderr and "--weights random" in result.stderr


def test_predict_names_every_input_it_cannot_embed(run_hubtune, tmp_path: Path) -> None:
    import hubtune as api
    from hubtune.heads.training import train_head
    from hubtune.store.vectors import DatasetVectors

    model = "hf:sentence-transformers/all-MiniLM-L6-v2"
    words = ["good", "great", "fine", "nice", "bad", "awful", "poor", "sad"]
    vectors = api.load_backbone(model, precision="fp32").embed(words)
    backbone = api.load_backbone(model, precision="fp32")
    data = DatasetVectors(vectors, [f"{i:032x}" for i in range(8)], ["pos"] * 4 + ["neg"] * 4,
                          ["train", "train", "train", "val"] * 2, [""] * 8, 0)
    head = train_head(data, "knn", {"ref": model, "fingerprint": backbone.fingerprint("float16"),
                                    "options": {"precision": "fp32"}}, k=3)
    head.save(tmp_path / "head")
    result = run_hubtune("predict", str(tmp_path / "head"), "lovely", "", "  ", "--cache", str(tmp_path / "c"),
                         check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "2 of the inputs cannot be embedded: '': empty text; '  ': empty text" in result.stderr


@pytest.mark.parametrize("name", ["", " ", "../up", ".hidden"])
def test_a_bad_dataset_name_is_refused_before_any_work(run_hubtune, tmp_path: Path, name: str) -> None:
    from hubtune.extract import extract
    from hubtune.store import DatasetNameError, EmbeddingStore

    table = tmp_path / "texts.jsonl"
    table.write_text('{"text": "a sentence"}\n')
    with EmbeddingStore(tmp_path / "cache") as store, pytest.raises(DatasetNameError):
        extract("hf:sentence-transformers/all-MiniLM-L6-v2", table, store, dataset_name=name, progress=False)
    result = run_hubtune("finetune", "timm:test_resnet", str(table), "--dataset", name, "--unfreeze", "1",
                         "--out", str(tmp_path / "ft"), check=False)
    assert result.returncode == 2 and "dataset name" in result.stderr


def test_max_failures_exceeded_still_reports_the_summary(run_hubtune, tmp_path: Path) -> None:
    table = tmp_path / "texts.jsonl"
    table.write_text('{"text": "fine"}\n{"text": ""}\n{"text": "   "}\n')
    result = run_hubtune("extract", "hf:sentence-transformers/all-MiniLM-L6-v2", str(table), "--cache",
                         str(tmp_path / "cache"), "--max-failures", "0.5", "--json", "--no-progress", check=False)
    assert result.returncode != 0 and "over --max-failures 50.0%" in result.stderr
    summary = json.loads(result.stdout)
    assert (summary["total"], summary["computed"], summary["failed"]) == (3, 1, 2)


def test_a_head_is_not_written_into_a_folder_of_other_files(run_hubtune, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "photo.jpg").write_bytes(b"x")
    result = run_hubtune("train", "--cache", str(tmp_path / "cache"), "--model", "timm:test_resnet", "--dataset", "d",
                         "--head", "knn", "--out", str(tmp_path / "data"), check=False)
    assert result.returncode != 0 and "holds other files and no head" in result.stderr
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["photo.jpg"]


def test_a_head_found_through_unset_options_records_the_ones_that_made_its_vectors(run_hubtune, make_image_folder,
                                                                                   tmp_path: Path) -> None:
    """train without --weights/--layer finds vectors made with them; predict must rebuild that backbone."""

    data = make_image_folder(tmp_path / "images", per_class=5)
    cache = str(tmp_path / "cache")
    run_hubtune("extract", "timm:test_resnet", str(data), "--cache", cache, "--weights", "random:3", "--layer", "layer3",
                "--precision", "fp32", "--no-progress")
    run_hubtune("train", "--cache", cache, "--model", "timm:test_resnet", "--dataset", "images", "--head", "knn",
                "--k", "3", "--out", str(tmp_path / "head"))
    recorded = json.loads((tmp_path / "head" / "head.json").read_text())["model"]["options"]
    assert (recorded["weights"], recorded["layer"], recorded["precision"]) == ("random:3", "layer3", "fp32")
    image = next((data / "cat").iterdir())
    predicted = json.loads(run_hubtune("predict", str(tmp_path / "head"), str(image), "--cache", cache,
                                       "--json").stdout)
    assert predicted[0]["label"] == "cat"


def test_lookup_prefers_the_fingerprints_a_dataset_was_extracted_with(make_image_folder, tmp_path: Path) -> None:
    """`all` is extracted at two layers, `some` (part of its files plus a missing one) at one: an
    unset --layer finds `some`'s vectors without asking which layer."""
    from hubtune.backbone import LoadOptions
    from hubtune.errors import HubtuneError
    from hubtune.extract import extract
    from hubtune.store import EmbeddingStore
    from hubtune.store.lookup import find_fingerprint

    data = make_image_folder(tmp_path / "all", per_class=3)
    some = tmp_path / "some.jsonl"
    files = sorted(data.rglob("*.png"))[:3] + [tmp_path / "gone.png"]
    some.write_text("".join(json.dumps({"path": str(f), "label": "x"}) + "\n" for f in files))
    opts = {"weights": "random:3", "device": "cpu", "precision": "fp32"}
    with EmbeddingStore(tmp_path / "cache") as store:
        made = extract("timm:test_resnet", some, store, progress=False, options=LoadOptions(**opts)).fingerprint
        for layer in (None, "layer3"):
            extract("timm:test_resnet", data, store, progress=False, options=LoadOptions(layer=layer, **opts))
        assert find_fingerprint(store, "timm:test_resnet", "some", LoadOptions(weights="random:3")) == made
        with pytest.raises(HubtuneError, match="2 sets of vectors of dataset 'all'"):
            find_fingerprint(store, "timm:test_resnet", "all", LoadOptions(weights="random:3"))


def test_sharded_extract_over_max_failures_reports_then_fails(tmp_path: Path, monkeypatch) -> None:
    """The engine path prints the merged summary itself, then raises (no summary object to carry)."""
    from click.testing import CliRunner

    import hubtune.scale.driver as driver
    from hubtune.cli import cli

    table = tmp_path / "texts.jsonl"
    table.write_text('{"text": "a"}\n')
    from hubtune.extract import ExtractSummary

    summary = ExtractSummary(dataset="texts", total=4, computed=1, cached=0, failed=3, items_per_s=1.0, seconds=1.0,
                             fingerprint="ab" * 16, engine="torchrun", shards=1, shards_run=1, merged=True)
    monkeypatch.setattr(driver, "extract_sharded", lambda *args, **kwargs: summary)
    result = CliRunner().invoke(cli, ["extract", "hf:sentence-transformers/all-MiniLM-L6-v2", str(table), "--cache",
                                      str(tmp_path / "c"), "--engine", "torchrun", "--max-failures", "0.5", "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["failed"] == 3
    assert "3 of 4 items failed, over --max-failures 50.0%" in result.stderr
