"""`hubtune index build` and `hubtune search` over an extracted dataset."""

from __future__ import annotations

import json
from pathlib import Path


MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"


def test_index_build_reuse_and_search_text(run_hubtune, tmp_path: Path) -> None:
    table = tmp_path / "animals.jsonl"
    texts = ["a small cat sleeps", "a kitten naps on the sofa", "the stock market fell", "shares dropped sharply"]
    table.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(texts, ["pet", "pet", "money", "money"])))
    cache = str(tmp_path / "cache")
    run_hubtune("extract", MODEL, str(table), "--cache", cache, "--precision", "fp32", "--no-progress")  # scores
    common = ["--cache", cache, "--model", MODEL, "--dataset", "animals"]
    built = json.loads(run_hubtune("index", "build", *common, "--json").stdout)
    assert set(built) >= {"kind", "rows", "path"} and built["kind"] == "flat" and built["rows"] == 4 and built["built"]
    again = json.loads(run_hubtune("index", "build", *common, "--json").stdout)
    assert again["built"] is False  # the saved index is valid and reused

    results = json.loads(run_hubtune("search", *common, "-k", "2", "a cat on a couch", "row:2", "--json").stdout)
    assert len(results) == 2
    assert [hit["label"] for hit in results[0]] == ["pet", "pet"]
    assert results[1][0]["item"].endswith("animals.jsonl:3") and abs(results[1][0]["score"] - 1.0) < 1e-4
    assert all(set(hit) >= {"item", "label", "score"} for hits in results for hit in hits)


def test_search_by_image_path_and_wrong_options(run_hubtune, make_image_folder, tmp_path: Path) -> None:
    data = make_image_folder(tmp_path / "images", per_class=3)
    cache = str(tmp_path / "cache")
    model_args = ["--weights", "random:5", "--device", "cpu", "--precision", "fp32"]
    run_hubtune("extract", "timm:test_resnet", str(data), "--cache", cache, *model_args, "--no-progress")
    common = ["--cache", cache, "--model", "timm:test_resnet", "--dataset", "images"]
    query = str(data / "dog" / "001.png")
    results = json.loads(run_hubtune("search", *common, *model_args, "-k", "1", query, "--json").stdout)
    assert results[0][0]["item"] == str((data / "dog" / "001.png").resolve()) and results[0][0]["score"] > 0.999
    wrong = run_hubtune("search", *common, "--weights", "random:5", "--precision", "bf16", query, check=False)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
