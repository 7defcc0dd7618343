"""``hubtune compare`` / ``hubtune.compare``: ranking backbones on a labelled dataset.

Three timm test models with random weights over small image folders made here. The accuracies must
be those ``hubtune train`` + ``hubtune eval`` give (test split), or those of the head functions on
the same rows (hold-out); a failing model keeps its row; a rerun over cached vectors computes nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

MODELS = ["timm:test_resnet.r160_in1k", "timm:test_vit.r160_in1k", "timm:test_efficientnet.r160_in1k"]
MODEL_ARGS = ["--weights", "random", "--device", "cpu", "--precision", "fp32"]
MODEL_OPTIONS = {"weights": "random", "device": "cpu", "precision": "fp32"}
CLASSES = ["red", "green", "blue"]


def invoke(*args: str) -> Any:
    from click.testing import CliRunner

    from hubtune.cli import cli

    return CliRunner().invoke(cli, list(args))


def _image(rng: np.random.Generator, tint: int) -> bytes:
    """A noisy 48 x 40 image leaning to one colour channel: learnable, not trivially."""
    pixels = rng.normal(110, 70, (48, 40, 3))
    pixels[..., tint] += 45
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _folder(root: Path, per_split: dict[str | None, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for split, count in per_split.items():
        for tint, name in enumerate(CLASSES):
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (folder / f"{i:03d}.png").write_bytes(_image(rng, tint))
    return root


@pytest.fixture(scope="module")
def split_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``shapes/{train,test}/{red,green,blue}/*.png``: 8 train and 4 test images per class."""
    return _folder(tmp_path_factory.mktemp("compare") / "shapes", {"train": 8, "test": 4}, seed=0)


@pytest.fixture(scope="module")
def first_run(split_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``hubtune compare`` of the three models over ``split_data`` into a fresh cache, with --plot into a
    folder that does not exist yet (made before any model runs)."""
    work = tmp_path_factory.mktemp("compare-run")
    cache, plot = work / "cache", work / "plots" / "models.png"
    result = invoke("compare", *MODELS, "--data", str(split_data), "--cache", str(cache), *MODEL_ARGS,
                    "--workers", "0", "--no-progress", "--json", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    return {"rows": json.loads(result.stdout), "cache": cache, "plot": plot, "work": work}


def test_compare_ranks_the_models_with_the_json_fields_and_a_plot(first_run: dict[str, Any]) -> None:
    rows = first_run["rows"]
    assert [row["ref"] for row in rows] != [] and sorted(row["ref"] for row in rows) == sorted(MODELS)
    assert set(rows[0]) >= {"ref", "fingerprint", "dim", "params_m", "items_per_s", "knn_accuracy", "linear_accuracy",
                            "pareto", "error", "throughput_from"}
    for row in rows:
        assert row["error"] is None
        assert len(row["fingerprint"]) == 32 and row["dim"] > 0 and 0 < row["params_m"] < 10
        assert row["items_per_s"] > 0 and row["throughput_from"] == "extract"
        assert 0 <= row["knn_accuracy"] <= 1 and 0 <= row["linear_accuracy"] <= 1
        assert (row["evaluated_on"], row["train_items"], row["test_items"]) == ("test", 24, 12)
        assert (row["computed"], row["cached"], row["failed"]) == (36, 0, 0)
    keys = [(row["linear_accuracy"], row["knn_accuracy"]) for row in rows]
    assert keys == sorted(keys, reverse=True)
    # the front: exactly the rows no other row beats on both linear accuracy and items/s
    for row in rows:
        dominated = any(o is not row and o["linear_accuracy"] >= row["linear_accuracy"] and
                        o["items_per_s"] >= row["items_per_s"] and
                        (o["linear_accuracy"], o["items_per_s"]) != (row["linear_accuracy"], row["items_per_s"])
                        for o in rows)
        assert row["pareto"] is (not dominated)
    assert any(row["pareto"] for row in rows)
    assert first_run["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(first_run["plot"]).size[0] > 100


def test_compare_accuracies_equal_train_then_eval(first_run: dict[str, Any], split_data: Path) -> None:
    """The test-split case: `hubtune train` on the dataset (its train split) and `hubtune eval HEAD`
    on the test split give exactly compare's accuracies, for every model and both heads."""
    cache = str(first_run["cache"])
    for row in first_run["rows"]:
        for kind in ("knn", "linear"):
            head = first_run["work"] / f"{row['ref'].split(':')[1]}-{kind}"
            trained = invoke("train", "--cache", cache, "--model", row["ref"], "--dataset", "shapes", "--head", kind,
                             "--out", str(head), *MODEL_ARGS, "--json")
            assert trained.exit_code == 0, trained.output
            assert json.loads((head / "head.json").read_text())["model"]["fingerprint"] == row["fingerprint"]
            evaluated = invoke("eval", str(head), str(split_data / "test"), "--cache", cache, "--json")
            assert evaluated.exit_code == 0, evaluated.output
            report = json.loads(evaluated.stdout)
            assert report["n"] == row["test_items"]
            assert report["accuracy"] == row[f"{kind}_accuracy"], (row["ref"], kind)


def test_a_second_compare_over_cached_vectors_computes_nothing(first_run: dict[str, Any], split_data: Path) -> None:
    again = invoke("compare", *MODELS, "--data", str(split_data), "--cache", str(first_run["cache"]), *MODEL_ARGS,
                   "--workers", "0", "--no-progress", "--json", "--timed-items", "12")
    assert again.exit_code == 0, again.output
    rows = {row["ref"]: row for row in json.loads(again.stdout)}
    for before in first_run["rows"]:
        row = rows[before["ref"]]
        assert (row["computed"], row["cached"]) == (0, 36)
        assert row["throughput_from"] == "timed" and row["items_per_s"] > 0
        for name in ("fingerprint", "dim", "params_m", "knn_accuracy", "linear_accuracy"):
            assert row[name] == before[name], name


def test_python_compare_returns_the_cli_rows(first_run: dict[str, Any], split_data: Path) -> None:
    import hubtune
    import hubtune.compare  # the submodule import leaves hubtune.compare callable all the same

    rows = hubtune.compare(MODELS, split_data, cache=first_run["cache"], timed_items=12, progress=False,
                           **MODEL_OPTIONS)
    assert [row["ref"] for row in rows] == [row["ref"] for row in first_run["rows"]]
    for row, cli_row in zip(rows, first_run["rows"]):
        assert list(row) == list(cli_row)
        stable = ("ref", "fingerprint", "dim", "params_m", "knn_accuracy", "linear_accuracy", "evaluated_on",
                  "train_items", "test_items", "error")
        assert {k: row[k] for k in stable} == {k: cli_row[k] for k in stable}


def test_a_failing_model_keeps_its_row_and_the_others_go_on(first_run: dict[str, Any], split_data: Path) -> None:
    good = MODELS[1]
    result = invoke("compare", "timm:no_such_model", good, "hf:sentence-transformers/all-MiniLM-L6-v2", "--data",
                    str(split_data), "--cache", str(first_run["cache"]), *MODEL_ARGS, "--workers", "0", "--no-progress",
                    "--json", "--timed-items", "12")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows[0]["ref"] == good and rows[0]["error"] is None and rows[0]["pareto"] is True
    before = next(row for row in first_run["rows"] if row["ref"] == good)
    assert (rows[0]["knn_accuracy"], rows[0]["linear_accuracy"]) == (before["knn_accuracy"], before["linear_accuracy"])
    failed = {row["ref"]: row for row in rows[1:]}
    assert "no_such_model" in failed["timm:no_such_model"]["error"]
    assert "text model" in failed["hf:sentence-transformers/all-MiniLM-L6-v2"]["error"]
    for row in failed.values():
        assert row["knn_accuracy"] is None and row["linear_accuracy"] is None and row["pareto"] is False

    table = invoke("compare", "timm:no_such_model", good, "--data", str(split_data), "--cache",
                   str(first_run["cache"]), *MODEL_ARGS, "--workers", "0", "--no-progress", "--timed-items", "12")
    assert table.exit_code == 0 and "failed: timm:no_such_model" in table.stdout

    every = invoke("compare", "timm:no_such_model", "hf:sentence-transformers/all-MiniLM-L6-v2", "--data",
                   str(split_data), "--cache", str(first_run["cache"]), *MODEL_ARGS, "--no-progress", "--json")
    assert every.exit_code == 1
    assert all(row["error"] for row in json.loads(every.stdout)) and "all 2 models failed" in every.output


def test_without_a_test_split_a_seeded_stratified_holdout_scores_every_model(tmp_path: Path) -> None:
    """The hold-out case (``hubtune train`` cannot be held to these rows): the accuracies equal the
    head functions `train` uses, fitted on the other rows and scored on the held-out ones."""
    import hubtune
    from hubtune.compare import evaluation_split
    from hubtune.data import open_dataset
    from hubtune.heads.training import train_head
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import DatasetVectors, load_dataset_vectors

    data = _folder(tmp_path / "flat", {None: 10}, seed=1)
    items = open_dataset(data).items()
    split = evaluation_split(items, seed=0)
    assert split.kind == "holdout" and split == evaluation_split(items, seed=0) != evaluation_split(items, seed=1)
    held_labels = [items[i].label for i in split.scored]
    assert sorted(held_labels) == sorted(CLASSES * 2)  # 20 % of each class's 10

    cache = tmp_path / "cache"
    rows = hubtune.compare(MODELS[:2], data, cache=cache, progress=False, **MODEL_OPTIONS)
    held = {items[i].origin for i in split.scored}
    with EmbeddingStore(cache, readonly=True) as store:
        for row in rows:
            assert (row["evaluated_on"], row["test_items"], row["train_items"]) == ("holdout", 6, 24)
            vectors = load_dataset_vectors(store, row["fingerprint"], "flat")
            test = [r for r, origin in enumerate(vectors.origins) if origin in held]
            train = [r for r in range(len(vectors.origins)) if r not in test]
            subset = DatasetVectors(vectors.vectors[train], [vectors.keys[r] for r in train],
                                    [vectors.labels[r] for r in train], [vectors.splits[r] for r in train],
                                    [vectors.origins[r] for r in train], 0)
            for kind in ("knn", "linear"):
                head = train_head(subset, kind, {"ref": row["ref"], "fingerprint": row["fingerprint"]})
                y = np.array([head.classes.index(vectors.labels[r]) for r in test])
                predicted = head.probabilities(vectors.vectors[test]).argmax(1)
                assert row[f"{kind}_accuracy"] == float((predicted == y).mean()), (row["ref"], kind)


def test_pareto_and_order_of_rows() -> None:
    from hubtune.compare import mark_pareto, ranked

    def row(ref: str, linear: float | None, knn: float | None, speed: float | None, error: str | None = None) -> dict:
        return {"ref": ref, "linear_accuracy": linear, "knn_accuracy": knn, "items_per_s": speed, "error": error}

    rows = ranked(mark_pareto([row("slow-best", 0.9, 0.8, 10), row("fast", 0.7, 0.9, 100), row("dominated", 0.7, 0.6, 50),
                               row("tie-knn", 0.9, 0.85, 5), row("broken", None, None, None, "boom"),
                               row("twin", 0.7, 0.5, 100)]))
    assert [r["ref"] for r in rows] == ["tie-knn", "slow-best", "fast", "dominated", "twin", "broken"]
    assert {r["ref"] for r in rows if r["pareto"]} == {"slow-best", "fast", "twin"}


def test_a_bad_plot_path_is_refused_before_any_model_runs(split_data: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "cache"
    for bad, says in (("x.txt", "ends in .txt"), ("x", "has no suffix"), ("a-file/x.png", "a-file is a file")):
        result = invoke("compare", MODELS[0], "--data", str(split_data), "--cache", str(cache), *MODEL_ARGS,
                        "--no-progress", "--json", "--plot", str(tmp_path / bad))
        assert result.exit_code == 2, (bad, result.output)
        assert "--plot" in result.output and says in result.output and ".png" in result.output, result.output
        assert "Traceback" not in result.output and result.stdout == ""
        assert not cache.exists()  # no model ran: the store was never opened

    from hubtune.compare import plot
    from hubtune.errors import HubtuneError, PlotError

    row = {"ref": "m", "linear_accuracy": 0.5, "knn_accuracy": 0.5, "items_per_s": 10.0, "error": None, "pareto": True}
    for bad in ("x.txt", "a-file/x.png"):
        with pytest.raises(PlotError) as raised:
            plot([row], tmp_path / bad)
        assert isinstance(raised.value, HubtuneError)
    assert plot([row], tmp_path / "new" / "folder" / "x.svg").read_bytes().lstrip().startswith(b"<?xml")


def test_the_plot_keeps_labels_and_legend_off_the_points_and_accuracy_at_most_one(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.figure

    from hubtune.compare import mark_pareto, plot

    drawn = []  # (figure, its renderer), taken as it is saved (plot closes it after)
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, *a, **k: (save(self, *a, **k), drawn.append((self, self.canvas.get_renderer()))))

    def row(ref: str, linear: float, speed: float) -> dict[str, Any]:
        return {"ref": ref, "linear_accuracy": linear, "knn_accuracy": linear, "items_per_s": speed, "error": None}

    long = "timm:vit_large_patch14_clip_224.openai_ft_in12k_in1k"
    cases = {"perfect": [row(MODELS[0], 1.0, 400), row(MODELS[1], 1.0, 30), row(long, 1.0, 60)],
             "spread": [row(MODELS[0], 0.92, 400), row(MODELS[1], 0.3, 10), row(MODELS[2], 0.35, 12), row(long, 0.5, 350)],
             "close": [row(MODELS[0], 1.0, 13.0), row(MODELS[2], 1.0, 14.8), row(MODELS[1], 1.0, 17.1)]}
    problems = []
    for name, rows in cases.items():
        plot(mark_pareto(rows), tmp_path / f"{name}.png")
        figure, renderer = drawn[-1]
        axes = figure.axes[0]
        box = axes.get_window_extent(renderer)
        if axes.get_ylim()[1] > 1.0:
            problems.append(f"{name}: the accuracy axis goes to {axes.get_ylim()[1]:.3f}")
        if axes.get_legend()._loc != 0:  # "best": placed off the points
            problems.append(f"{name}: the legend is fixed at {axes.get_legend()._loc}")
        assert sorted(label.get_text() for label in axes.texts) == sorted(r["ref"] for r in rows)
        extents = [label.get_window_extent(renderer) for label in axes.texts]
        for label, extent in zip(axes.texts, extents):
            if not box.x0 <= extent.x0 <= extent.x1 <= box.x1:
                problems.append(f"{name}: {label.get_text()} runs past the axes")
            if any(extent.overlaps(other) for other in extents if other is not extent):
                problems.append(f"{name}: {label.get_text()} covers another label")
    assert not problems, problems


def test_when_every_model_fails_no_plot_is_written(split_data: Path, tmp_path: Path) -> None:
    target = tmp_path / "models.png"
    result = invoke("compare", "timm:no_such_model", "--data", str(split_data), "--cache", str(tmp_path / "cache"),
                    *MODEL_ARGS, "--no-progress", "--json", "--plot", str(target))
    assert result.exit_code == 1 and json.loads(result.stdout)[0]["error"]
    assert not target.exists() and "plot written" not in result.output.replace("no plot written", "")
    assert f"no plot written to {target}: every model failed" in result.output

    from hubtune.compare import plot
    from hubtune.errors import PlotError

    with pytest.raises(PlotError, match="no plot written"):
        plot(json.loads(result.stdout), target)
    assert not target.exists()


def test_a_dataset_the_heads_cannot_train_on_is_refused_before_any_model(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    single = _folder(tmp_path / "single", {"train": 6, "test": 2}, seed=2)
    for extra in CLASSES[1:]:  # one class left: red
        for split in ("train", "test"):
            for file in (single / split / extra).iterdir():
                file.unlink()
            (single / split / extra).rmdir()
    flat = tmp_path / "flat-single" / "red"
    flat.mkdir(parents=True)
    for i in range(6):
        (flat / f"{i}.png").write_bytes((single / "train" / "red" / f"{i:03d}.png").read_bytes())
    lonely = _folder(tmp_path / "lonely", {"train": 1, "test": 1}, seed=3)  # no class with 2 training items
    for data, says in ((single, "1 class: 'red' (6 items)"), (flat.parent, "1 class: 'red' (6 items)"),
                       (lonely, "3 classes: 'blue' (1 item), 'green' (1 item), 'red' (1 item)")):
        result = invoke("compare", MODELS[0], "--data", str(data), "--cache", str(cache), *MODEL_ARGS, "--no-progress")
        assert result.exit_code == 2, (data, result.output)
        assert says in result.output and ("two classes" in result.output or "validation item" in result.output)
        assert not cache.exists()  # refused before the store opened, let alone a model


def test_a_misspelt_option_lists_the_model_options(split_data: Path, tmp_path: Path) -> None:
    import hubtune

    with pytest.raises(TypeError, match=r"compare\(\) got unknown option 'wieghts'; model options are .*weights"):
        hubtune.compare([MODELS[0]], split_data, cache=tmp_path / "cache", progress=False, wieghts="random")
    assert not (tmp_path / "cache").exists()


def test_a_model_of_the_wrong_kind_is_refused_without_loading_it(split_data: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The source tells the kind (timm: images; hf: from the cached snapshot's files), so compare refuses
    the model before loading it (a text model took 9-13 s to be refused on images)."""
    import hubtune
    import hubtune.api

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(hubtune.api, "load_backbone", no_load)
    texts = tmp_path / "texts.jsonl"
    texts.write_text("".join(json.dumps({"text": f"item {i}", "label": str(i % 2)}) + "\n" for i in range(12)))
    for model, data, kind in (("hf:sentence-transformers/all-MiniLM-L6-v2", split_data, "a text model"),
                              (MODELS[0], texts, "an image model")):
        row, = hubtune.compare([model], data, cache=tmp_path / "cache", progress=False, **MODEL_OPTIONS)
        assert kind in row["error"] and "cannot be compared on this dataset" in row["error"], row["error"]
        assert row["seconds"] < 2
