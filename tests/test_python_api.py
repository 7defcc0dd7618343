"""The Python API (``hubtune.embed``, ``hubtune.Cache``, ``hubtune.train_head`` / ``load_head`` and the
head methods) gives what the CLI gives for the same inputs, its errors are hubtune errors, and
``import hubtune`` stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import hubtune
from hubtune.errors import FingerprintLookupError, HeadError, HubtuneError, InputError

TEXT = "hf:sentence-transformers/all-MiniLM-L6-v2"
IMAGE = "timm:test_resnet"
FP32 = {"precision": "fp32"}
POSITIVE = ["wonderful", "delightful", "excellent", "superb", "lovely", "brilliant", "joyful", "fantastic"]
NEGATIVE = ["awful", "terrible", "horrible", "dreadful", "miserable", "disgusting", "nasty", "tragic"]


def cli(*args: str) -> object:
    """The CLI in this process (the click command itself), ``--json`` appended; its parsed output."""
    from click.testing import CliRunner

    from hubtune.cli import cli as group

    result = CliRunner().invoke(group, [*args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def words(tmp_path_factory) -> dict:
    """A labelled word table extracted by ``hubtune extract`` (fp32) into a store, and exported."""
    folder = tmp_path_factory.mktemp("words")
    table = folder / "words.jsonl"
    rows = [{"text": w, "label": label} for ws, label in ((POSITIVE, "pos"), (NEGATIVE, "neg")) for w in ws]
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    cache = folder / "cache"
    cli("extract", TEXT, str(table), "--cache", str(cache), "--precision", "fp32", "--no-progress")
    cli("export", "--cache", str(cache), "--model", TEXT, "--dataset", "words", "--out", str(folder / "export"))
    exported = np.load(folder / "export" / "embeddings.npy")
    items = [json.loads(line) for line in (folder / "export" / "items.jsonl").read_text().splitlines()]
    return {"folder": folder, "table": table, "cache": cache, "texts": [row["text"] for row in rows],
            "exported": exported, "items": items}


def test_import_hubtune_loads_no_heavy_library_and_exports_the_api() -> None:
    code = ("import sys, hubtune\n"
            "names = ['embed', 'Embedded', 'Cache', 'Vectors', 'train_head', 'load_head', 'compare']\n"
            "assert all(name in hubtune.__all__ for name in names), hubtune.__all__\n"
            "hubtune.Cache, hubtune.embed, hubtune.Vectors  # resolving these imports no model library either\n"
            "print([m for m in ('torch', 'transformers', 'faiss', 'numpy', 'sklearn') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_embed_and_cache_vectors_equal_extract_and_export(words: dict, tmp_path: Path, monkeypatch) -> None:
    cache = hubtune.Cache(words["cache"])
    vectors = cache.vectors(TEXT, "words")
    np.testing.assert_array_equal(vectors.array, words["exported"])
    assert [{"key": k, "label": lab, "split": s, "origin": o} for k, lab, s, o in
            zip(vectors.keys, vectors.labels, vectors.splits, vectors.origins)] == words["items"]
    assert vectors.fingerprint == cache.fingerprint(TEXT, "words") and vectors.dim == 384 and vectors.missing == 0

    import hubtune.api as api_module

    def no_model(*args, **kwargs):
        raise AssertionError("the store holds every input: no model should load")

    with monkeypatch.context() as patch:  # the same request as extract's: answered from the store
        patch.setattr(api_module, "load_backbone", no_model)
        reordered = hubtune.embed(TEXT, words["texts"][::-1], cache=cache, **FP32)
        from_table = hubtune.embed(TEXT, words["table"], cache=words["cache"], **FP32)
    assert reordered.dtype == np.float32
    np.testing.assert_array_equal(reordered, words["exported"][::-1])
    np.testing.assert_array_equal(from_table, words["exported"])

    fresh = tmp_path / "fresh"  # filled by embed: the keys and fingerprint extract uses
    np.testing.assert_allclose(hubtune.embed(TEXT, words["texts"], cache=fresh, **FP32), words["exported"], atol=2e-3)
    summary = hubtune.Cache(fresh).extract(TEXT, words["table"], **FP32)
    assert summary.computed == 0 and summary.cached == len(words["texts"])
    assert summary.fingerprint == vectors.fingerprint

    plain = hubtune.embed(TEXT, words["texts"][:3], **FP32)  # no store: float32 straight from the model
    np.testing.assert_allclose(plain, words["exported"][:3], atol=2e-3)
    np.testing.assert_allclose(plain, hubtune.load_backbone(TEXT, **FP32).embed(words["texts"][:3]), atol=1e-5)


def test_embed_images_as_paths_bytes_and_pil_through_the_store(make_image_folder, tmp_path: Path) -> None:
    from PIL import Image

    folder = make_image_folder(tmp_path / "pics", per_class=3)
    cache = hubtune.Cache(tmp_path / "cache")
    options = {"weights": "random:5", "device": "cpu", **FP32}
    cache.extract(IMAGE, folder, **options)
    stored = cache.vectors(IMAGE, "pics", **options)
    files = [Path(origin) for origin in stored.origins]
    np.testing.assert_array_equal(hubtune.embed(IMAGE, files, cache=cache, **options), stored.array)
    np.testing.assert_array_equal(hubtune.embed(IMAGE, [str(f) for f in files], cache=cache, **options), stored.array)
    np.testing.assert_array_equal(hubtune.embed(IMAGE, [f.read_bytes() for f in files], cache=cache, **options),
                                  stored.array)  # bytes are keyed as the files are: read from the store
    pil = hubtune.embed(IMAGE, [Image.open(f) for f in files], cache=cache, **options)
    np.testing.assert_allclose(pil, stored.array, rtol=1e-2, atol=1e-2)  # the same pixels, under their own key
    np.testing.assert_allclose(hubtune.embed(IMAGE, files, **options), stored.array, rtol=1e-2, atol=1e-2)


def test_bad_inputs_raise_one_error_naming_each_or_are_skipped(words: dict, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(InputError) as raised:
        hubtune.embed(TEXT, ["fine", "", 3, "  ", "good"], cache=cache, **FP32)
    message = str(raised.value)
    assert message.startswith("3 of the 5 inputs cannot be embedded")
    assert "#1 '': empty text" in message and "#2 3: a text model takes texts, got int" in message
    assert "#3 '  ': empty text" in message
    assert [failure.index for failure in raised.value.failures] == [1, 2, 3]
    vectors, failed = hubtune.embed(TEXT, ["fine", "", 3, "  ", "good"], cache=cache, errors="skip", **FP32)
    assert vectors.shape == (5, 384) and [f.index for f in failed] == [1, 2, 3]
    assert np.isnan(vectors[[1, 2, 3]]).all() and np.isfinite(vectors[[0, 4]]).all()
    assert {row["reason"] for row in hubtune.Cache(cache).errors()} == {"empty text"}  # recorded as extract records

    image = tmp_path / "ok.png"
    image.write_bytes(_png_bytes())
    options = {"weights": "random:5", "device": "cpu", **FP32}
    with pytest.raises(InputError) as raised:
        hubtune.embed(IMAGE, [image, tmp_path / "missing.png", b"not an image"], **options)
    assert "#1 " in str(raised.value) and "no such file" in str(raised.value)
    assert "#2 <12 bytes>: not an image" in str(raised.value)
    assert isinstance(raised.value, HubtuneError) and isinstance(raised.value, ValueError)


def test_options_are_checked_by_name(words: dict) -> None:
    with pytest.raises(TypeError, match="'colour'"):
        hubtune.embed(TEXT, ["a"], colour="red")
    with pytest.raises(TypeError, match="'bogus'"):
        hubtune.Cache(words["cache"]).vectors(TEXT, "words", bogus=1)
    with pytest.raises(TypeError, match="'nope'"):
        hubtune.train_head(words["cache"], TEXT, "words", nope=True)
    with pytest.raises(FingerprintLookupError):  # a hubtune error, never SystemExit
        hubtune.Cache(words["cache"]).vectors(TEXT, "words", layer="hidden_states.1")
    with pytest.raises(HeadError):
        hubtune.train_head(words["cache"], TEXT, "words", "linear", templates=["a {}"])


@pytest.mark.parametrize("kind", ["linear", "knn"])
def test_train_head_and_its_methods_equal_train_eval_predict(words: dict, kind: str, tmp_path: Path) -> None:
    cache, table = str(words["cache"]), str(words["table"])
    out = tmp_path / "cli-head"
    trained = cli("train", "--cache", cache, "--model", TEXT, "--dataset", "words", "--head", kind, "--k", "3",
                  "--out", str(out))
    head = hubtune.train_head(hubtune.Cache(cache), TEXT, "words", kind, k=3)
    assert head.classes == trained["classes"] == ["neg", "pos"]
    assert head.metrics["val"]["accuracy"] == trained["val_accuracy"]
    assert head.model == hubtune.load_head(out).model

    queries = ["marvellous", "horrid", "wonderful"]  # two the store lacks, one it holds
    predicted = cli("predict", str(out), *queries, "--cache", cache)
    probabilities = head.predict_proba(queries)
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(1), 1.0)
    assert head.predict(queries) == [row["label"] for row in predicted] == ["pos", "neg", "pos"]
    np.testing.assert_allclose(probabilities.max(1), [row["score"] for row in predicted], atol=1e-6)

    loaded = hubtune.load_head(out, cache=cache)  # the CLI's head, through the Python API
    np.testing.assert_allclose(loaded.predict_proba(queries), probabilities, atol=1e-12)
    vectors = hubtune.Cache(cache).vectors(TEXT, "words")  # vectors already embedded are scored as they are
    np.testing.assert_allclose(head.predict_proba(vectors.array), head.predict_proba(words["texts"]), atol=1e-12)
    assert Path(head.cache) == words["cache"]  # train_head's head embeds through the cache it was trained from
    head.cache = None  # no store: the vectors are rounded as the store rounds them, so the results agree
    np.testing.assert_allclose(head.predict_proba(queries), probabilities, atol=1e-6)

    assert head.evaluate(table, cache=cache) == cli("eval", str(out), table, "--cache", cache)
    assert head.evaluate(table)["n"] == len(words["texts"])  # without a cache: a scratch store

    head.save(tmp_path / "api-head")
    again = hubtune.load_head(tmp_path / "api-head")
    np.testing.assert_allclose(again.predict_proba(vectors.array), head.predict_proba(vectors.array), atol=1e-12)
    with pytest.raises(HeadError, match="2 of the inputs cannot be embedded: '': empty text; '  ': empty text"):
        head.predict(["fine", "", "  "])
    with pytest.raises(HeadError, match="384-d"):
        head.predict(np.zeros((2, 5), np.float32))


def test_cache_methods_are_what_the_cache_commands_report(words: dict, tmp_path: Path) -> None:
    cache = hubtune.Cache(words["cache"])
    listed = cli("cache", "ls", "--cache", str(cache))
    assert cache.fingerprints() == listed["fingerprints"]
    datasets = {entry.name: entry for entry in cache.datasets()}
    assert [{"name": name, "items": entry.items} for name, entry in datasets.items()] == listed["datasets"]
    assert datasets["words"].classes == ["neg", "pos"] and datasets["words"].splits == {"train": 16}
    assert datasets["words"].models == [TEXT]
    report = cache.verify()
    assert report.ok and cli("cache", "verify", "--cache", str(cache)) == {
        "ok": True, "blocks": report.blocks, "vectors": report.vectors, "manifests": report.manifests, "problems": []}
    exported = cache.export(TEXT, "words", tmp_path / "out")
    assert exported["rows"] == 16 and np.array_equal(np.load(tmp_path / "out" / "embeddings.npy"), words["exported"])
    assert cache == hubtune.Cache(str(words["cache"])) and Path(cache) == words["cache"]


def _png_bytes() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_evaluate_scores_the_test_split_and_reads_cached_vectors_without_the_model(words: dict, tmp_path: Path) -> None:
    """A table with a split column is scored on its `test` rows only (not on what the head was fitted
    on), and when every item is cached no model is loaded."""
    cache = str(words["cache"])
    table = tmp_path / "split.jsonl"
    rows = [{"text": text, "label": item["label"], "split": "test" if i % 4 == 0 else "train"}
            for i, (text, item) in enumerate(zip(words["texts"], words["items"]))]
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    head = hubtune.train_head(hubtune.Cache(cache), TEXT, "words", "knn", k=3)
    report = head.evaluate(table)
    tests = [row for row in rows if row["split"] == "test"]
    assert report["split"] == "test" and report["n"] == len(tests)
    assert head.loaded_backbone is None  # everything was in the store: nothing loaded
    assert cli("eval", str(head.save(tmp_path / "head")), str(table), "--cache", cache) == report
    assert head.evaluate(words["table"])["split"] == "all"


IMAGE_OPTIONS = {"weights": "random:5", "device": "cpu", **FP32}


def test_embed_settings_and_inputs_are_checked_up_front(monkeypatch) -> None:
    """A bad batch_size / workers / streams, a mapping or a set is refused by name before any model loads."""
    import hubtune.api as api_module
    from hubtune.errors import BackboneOptionError

    monkeypatch.setattr(api_module, "load_backbone", lambda *a, **k: pytest.fail("no model should load"))
    for setting, message in ((dict(batch_size=0), "batch_size=0; expected a whole number of at least 1"),
                             (dict(batch_size=2.5), "batch_size=2.5; expected a whole number"),
                             (dict(workers=-1), "workers=-1; expected a whole number of at least 0"),
                             (dict(streams=0), "streams=0; expected a whole number of at least 1")):
        with pytest.raises(BackboneOptionError, match=message):
            hubtune.embed(TEXT, ["x"], **setting)
    with pytest.raises(TypeError, match="not a dict; pass a list"):
        hubtune.embed(TEXT, {"a": 1})
    with pytest.raises(TypeError, match="not a set; pass a list"):
        hubtune.embed(TEXT, {"a", "b"})
    with pytest.raises(TypeError, match=r"not an array: numpy arrays are not accepted as images; use PIL\.Image"):
        hubtune.embed(IMAGE, np.zeros((32, 32, 3), np.uint8))


def test_an_array_among_image_inputs_is_a_bad_input_not_a_missing_tower(tmp_path: Path) -> None:
    image = tmp_path / "ok.png"
    image.write_bytes(_png_bytes())
    with pytest.raises(InputError, match=r"#0 <uint8 array \(32, 32, 3\)>: numpy arrays are not accepted as images"):
        hubtune.embed(IMAGE, [np.zeros((32, 32, 3), np.uint8)], **IMAGE_OPTIONS)
    embedded = hubtune.embed(IMAGE, [image, np.zeros((32, 32, 3), np.uint8)], errors="skip", **IMAGE_OPTIONS)
    assert [(f.index, f.reason) for f in embedded.failed] == [
        (1, "numpy arrays are not accepted as images; use PIL.Image.fromarray(array)")]
    assert repr(embedded) == f"Embedded(vectors=<float32 array (2, {embedded.vectors.shape[1]})>, failed=1 at [1])"
    with pytest.raises(InputError, match=r"#1 <uint8 array \(2, 2\)>: numpy arrays are not accepted"):  # text model
        hubtune.embed(TEXT, ["fine", np.zeros((2, 2), np.uint8)])


def test_a_model_without_prompts_says_so_plainly() -> None:
    from hubtune.errors import BackboneOptionError

    for asked in ({"prompt": "query"}, {"prompt_text": "x"}):
        with pytest.raises(BackboneOptionError) as raised:
            hubtune.embed(IMAGE, [_png_bytes()], **asked, **IMAGE_OPTIONS)
        message = str(raised.value)
        assert "does not take prompts (image model); drop prompt=/prompt_text=" in message
        assert "its prompts" not in message and "--" not in message


def test_an_unknown_train_head_option_lists_the_head_parameters_too(words: dict) -> None:
    with pytest.raises(TypeError) as raised:
        hubtune.train_head(words["cache"], TEXT, "words", "linear", c=1.0)
    message = str(raised.value)
    assert message.startswith("train_head() got unknown option 'c'; its own parameters are out, normalise, "
                              "balanced, C, k, temperature, hidden, epochs, templates; model options are layer, pool")
    assert message.endswith("; did you mean 'C'?")


def test_python_errors_name_keywords_and_the_cli_names_flags(words: dict, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hubtune.cli import cli as group
    from hubtune.errors import BackboneOptionError, StoreError

    cache = hubtune.Cache(tmp_path / "cache")
    for layer in ("hidden_states.1", "hidden_states.2"):  # two sets of vectors of one dataset: ambiguous
        cache.extract(TEXT, words["table"], "words", layer=layer, **FP32)
    with pytest.raises(FingerprintLookupError) as raised:
        cache.vectors(TEXT, "words")
    assert "(layer=, pool=, precision=, weights=, prompt_text=, dim= or @revision)" in str(raised.value)
    result = CliRunner().invoke(group, ["export", "--cache", str(cache), "--model", TEXT, "--dataset", "words",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "(--layer, --pool, --precision, --weights, --prompt-text, --dim or" in result.output
    with pytest.raises(FingerprintLookupError, match=r"\(layer=, pool="):  # after the CLI: keywords again
        cache.vectors(TEXT, "words")

    with pytest.raises(BackboneOptionError, match=r"^dim=999: .* makes 384-d vectors; give 1\.\.384$"):
        hubtune.embed(TEXT, ["a"], dim=999)
    with pytest.raises(BackboneOptionError, match=r"^weights='w\.pt': expected 'default'"):
        hubtune.embed(TEXT, ["a"], weights="w.pt")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(HeadError, match=f"^out={a_file} is a file"):
        hubtune.train_head(words["cache"], TEXT, "words", out=a_file)
    with pytest.raises(StoreError, match=f"^out={a_file} is a file; give a folder"):  # not a raw FileExistsError
        hubtune.Cache(words["cache"]).export(TEXT, "words", a_file)


def test_reprs_are_short_and_the_train_report_rounds_its_scores(words: dict, tmp_path: Path) -> None:
    from hubtune.heads.fit import train_report

    head = hubtune.train_head(words["cache"], TEXT, "words", "linear", C=1.0)
    fingerprint = hubtune.Cache(words["cache"]).fingerprint(TEXT, "words")
    assert repr(head) == (f"TrainedHead(kind='linear', classes=['neg', 'pos'], model={TEXT!r}, "
                          f"fingerprint={fingerprint!r}, val_accuracy={round(head.metrics['val']['accuracy'], 4)})")
    head.metrics["val"]["majority_baseline"] = 1 / 3
    head.metrics["val"]["accuracy"] = 2 / 3
    report = train_report(head, tmp_path)
    assert report["majority_baseline"] == 0.333333 and report["val_accuracy"] == 0.666667
