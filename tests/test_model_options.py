"""The model options every source shares through the core: ``--dim`` (Matryoshka truncation),
``--prompt`` / ``--prompt-text`` (refused by models that take none) and the tower check.

The families that declare prompts and two towers have their own parity tests; here the core's
part: validation, the fingerprint fields, and ``--dim`` reusing full-size vectors without a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hubtune.fingerprint import FIELDS

MINILM = "hf:sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["a cat sat on the mat", "dogs bark at night", "the stock market fell", "rain on the window",
         "a quiet afternoon", "the train was late"]


def invoke(*args: str) -> dict | list:
    from click.testing import CliRunner

    from hubtune.cli import cli

    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads(result.stdout)


def _texts(tmp_path: Path) -> Path:
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def test_dim_cuts_cached_full_vectors_without_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, cache = _texts(tmp_path), str(tmp_path / "cache")
    full = invoke("extract", MINILM, str(data), "--cache", cache, "--precision", "fp32")
    assert full["computed"] == len(TEXTS)

    import hubtune.api

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("--dim over cached full-size vectors loaded the model")

    monkeypatch.setattr(hubtune.api, "load_backbone", no_model)
    cut = invoke("extract", MINILM, str(data), "--cache", cache, "--precision", "fp32", "--dim", "64")
    assert (cut["computed"], cut["cached"]) == (0, len(TEXTS))
    assert cut["fingerprint"] != full["fingerprint"]
    again = invoke("extract", MINILM, str(data), "--cache", cache, "--precision", "fp32", "--dim", "64")
    assert again["fingerprint"] == cut["fingerprint"]
    monkeypatch.undo()

    invoke("export", "--cache", cache, "--model", MINILM, "--dataset", "texts", "--out", str(tmp_path / "full"))
    invoke("export", "--cache", cache, "--model", MINILM, "--dataset", "texts", "--dim", "64",
           "--out", str(tmp_path / "cut"))
    whole = np.load(tmp_path / "full" / "embeddings.npy")
    part = np.load(tmp_path / "cut" / "embeddings.npy")
    assert whole.shape == (len(TEXTS), 384) and part.shape == (len(TEXTS), 64)
    np.testing.assert_array_equal(part, whole[:, :64])  # exactly the first 64: no renormalising


def test_dim_backbone_equals_the_cut_and_names_dim_in_the_fingerprint() -> None:
    from hubtune.api import load_backbone

    full = load_backbone(MINILM, precision="fp32")
    cut = load_backbone(MINILM, precision="fp32", dim=32)
    assert cut.dim == 32 and full.dim == 384
    np.testing.assert_allclose(cut.embed(TEXTS[:3]), full.embed(TEXTS[:3])[:, :32], atol=1e-6)
    fields = cut.fingerprint_fields()
    assert fields["dim"] == 32 and "dim" not in full.fingerprint_fields()
    assert set(full.fingerprint_fields()) == set(FIELDS)  # untouched models keep their fingerprints
    assert cut.load_options().dim == 32
    same = load_backbone(MINILM, precision="fp32", dim=384)  # the full width is no truncation at all
    assert same.fingerprint() == full.fingerprint()


def test_dim_out_of_range_is_refused(tmp_path: Path) -> None:
    from hubtune.api import load_backbone
    from hubtune.errors import BackboneOptionError

    with pytest.raises(BackboneOptionError, match=r"^dim=999: .* makes 384-d vectors; give 1\.\.384"):
        load_backbone(MINILM, dim=999)


def test_a_model_without_prompts_refuses_one() -> None:
    from hubtune.api import load_backbone
    from hubtune.errors import BackboneOptionError

    with pytest.raises(BackboneOptionError, match=r"does not take prompts \(image model\); drop prompt=/prompt_text=$"):
        load_backbone("timm:test_resnet.r160_in1k", weights="random", prompt="query")
    with pytest.raises(BackboneOptionError, match="does not take prompts"):
        load_backbone("timm:test_resnet.r160_in1k", weights="random", prompt_text="query: ")
    with pytest.raises(BackboneOptionError, match="not both"):
        load_backbone("timm:test_resnet.r160_in1k", weights="random", prompt="a", prompt_text="b")
    plain = load_backbone("timm:test_resnet.r160_in1k", weights="random", prompt_text="")  # '' is no prompt
    assert plain.prompt is None and "prompt" not in plain.fingerprint_fields()


def test_a_single_tower_model_asked_for_another_tower_is_refused() -> None:
    from hubtune.api import load_backbone
    from hubtune.errors import TowerError

    with pytest.raises(TowerError, match="embeds images and has no text tower"):
        load_backbone("timm:test_resnet.r160_in1k", weights="random", tower="text")
    assert load_backbone("timm:test_resnet.r160_in1k", weights="random", tower="image").tower is None


def test_a_head_trained_on_cut_vectors_predicts_with_the_same_cut(tmp_path: Path) -> None:
    data, cache = _texts(tmp_path), str(tmp_path / "cache")
    invoke("extract", MINILM, str(data), "--cache", cache, "--precision", "fp32", "--dim", "48")
    trained = invoke("train", "--cache", cache, "--model", MINILM, "--dataset", "texts", "--dim", "48",
                     "--head", "linear", "--out", str(tmp_path / "head"))
    assert trained["classes"] == [0, 1] or trained["classes"] == ["0", "1"]
    head = json.loads((tmp_path / "head" / "head.json").read_text())
    assert head["model"]["options"]["dim"] == 48
    predicted = invoke("predict", str(tmp_path / "head"), *TEXTS[:2], "--cache", cache)
    assert [row["input"] for row in predicted] == TEXTS[:2]
