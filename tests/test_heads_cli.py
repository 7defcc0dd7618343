"""`hubtune train`, `eval` and `predict` on cached vectors, and index rebuilds after damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"
POSITIVE = ["wonderful", "delightful", "excellent", "superb", "lovely", "brilliant", "joyful", "fantastic",
            "pleasant", "great", "happy", "beautiful"]
NEGATIVE = ["awful", "terrible", "horrible", "dreadful", "miserable", "disgusting", "nasty", "tragic",
            "painful", "bad", "sad", "ugly"]


@pytest.fixture(scope="module")
def words(run_hubtune, tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("words")
    table = folder / "words.jsonl"
    rows = [{"text": w, "label": label} for ws, label in ((POSITIVE, "pos"), (NEGATIVE, "neg")) for w in ws]
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = folder / "cache"
    # fp32 pinned: the tests below compare predict's scores with an fp32 embedding made in this process,
    # whatever `--precision auto` resolves to on this CPU (bf16 where it has AVX512-BF16 or AMX)
    run_hubtune("extract", MODEL, str(table), "--cache", str(cache), "--precision", "fp32", "--no-progress")
    return table, cache


@pytest.mark.parametrize("kind", ["linear", "knn", "mlp"])
def test_train_eval_predict(run_hubtune, words, kind: str, tmp_path: Path) -> None:
    table, cache = words
    out = tmp_path / "head"
    trained = json.loads(run_hubtune("train", "--cache", str(cache), "--model", MODEL, "--dataset", "words",
                                     "--head", kind, "--out", str(out), "--k", "3", "--epochs", "30", "--json").stdout)
    assert set(trained) >= {"head", "classes", "val_accuracy"} and trained["classes"] == ["neg", "pos"]
    assert (out / "head.safetensors").is_file() and (out / "head.json").is_file()

    evaluated = json.loads(run_hubtune("eval", str(out), str(table), "--cache", str(cache), "--json").stdout)
    assert set(evaluated) >= {"n", "accuracy", "balanced_accuracy", "top5"} and evaluated["n"] == 24
    assert evaluated["accuracy"] >= 0.75
    if kind == "linear":  # an unknown label is not scored, and eval says so
        mixed = tmp_path / "mixed.jsonl"
        mixed.write_text(table.read_text() + json.dumps({"text": "lukewarm", "label": "neutral"}) + "\n")
        result = run_hubtune("eval", str(out), str(mixed), "--cache", str(cache), "--json")
        assert json.loads(result.stdout)["skipped"] == 1
        assert "1 items not scored" in result.stderr and "neutral" in result.stderr

    predicted = json.loads(run_hubtune("predict", str(out), "marvellous", "horrid", "--cache", str(cache),
                                       "--json").stdout)
    assert [row["input"] for row in predicted] == ["marvellous", "horrid"]
    assert all(set(row) >= {"input", "label", "score"} for row in predicted)
    if kind != "mlp":  # a tiny MLP on 20 words is not expected to generalise
        assert [row["label"] for row in predicted] == ["pos", "neg"]

    import hubtune as api
    from hubtune.heads.trained import TrainedHead

    head = TrainedHead.load(out)
    assert head.model["options"]["precision"] == "fp32"  # what the vectors were made with, not what auto means here
    direct = head.probabilities(api.load_backbone(MODEL, precision="fp32").embed(["marvellous", "horrid"])
                                .astype(np.float16).astype(np.float32))  # vectors go through the float16 store
    np.testing.assert_allclose([row["score"] for row in predicted], direct.max(1), atol=1e-5)


def test_head_refuses_another_models_vectors(run_hubtune, words, tmp_path: Path) -> None:
    _, cache = words
    out = tmp_path / "head"
    run_hubtune("train", "--cache", str(cache), "--model", MODEL, "--dataset", "words", "--head", "linear",
                "--out", str(out))
    manifest = json.loads((out / "head.json").read_text())
    manifest["model"]["fingerprint"] = "0" * 32  # as if trained on another model's vectors
    (out / "head.json").write_text(json.dumps(manifest))
    result = run_hubtune("predict", str(out), "fine", "--cache", str(cache), check=False)
    assert result.returncode != 0 and "0" * 32 in result.stderr and "Traceback" not in result.stderr


def test_damaged_index_is_rebuilt(run_hubtune, words) -> None:
    _, cache = words
    common = ["--cache", str(cache), "--model", MODEL, "--dataset", "words", "--json"]
    first = json.loads(run_hubtune("index", "build", *common).stdout)
    path = Path(first["path"])
    path.write_bytes(path.read_bytes()[:100])  # truncated
    again = json.loads(run_hubtune("index", "build", *common).stdout)
    assert again["built"] is True and again["rows"] == 24
    assert json.loads(run_hubtune("index", "build", *common).stdout)["built"] is False


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_the_head_loop_runs_the_precision_auto_resolves_to(run_hubtune, tiny_bert_repo: str, forced: str,
                                                            tmp_path: Path) -> None:
    """extract -> train -> eval -> predict with ``--precision`` left at auto and HUBTUNE_AUTO_PRECISION
    deciding what auto means: the vectors and the head record that precision, eval and predict rebuild
    exactly that backbone (one fingerprint in the store at the end, even when predict runs where auto
    means the other precision), and predict's scores are the head applied to the exported vectors."""
    from hubtune.data import content_key
    from hubtune.heads.trained import TrainedHead
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import export_dataset

    ref, other = f"hf:{tiny_bert_repo}", {"fp32": "bf16", "bf16": "fp32"}[forced]
    env = {"HUBTUNE_AUTO_PRECISION": forced}
    table, cache, out = tmp_path / "words.jsonl", str(tmp_path / "cache"), tmp_path / "head"
    words = [(w, "pos") for w in POSITIVE] + [(w, "neg") for w in NEGATIVE]
    table.write_text("".join(json.dumps({"text": w, "label": label}) + "\n" for w, label in words))

    run_hubtune("extract", ref, str(table), "--cache", cache, "--no-progress", env=env)
    run_hubtune("train", "--cache", cache, "--model", ref, "--dataset", "words", "--head", "linear", "--out", str(out),
                env=env)
    head = TrainedHead.load(out)
    assert head.model["options"]["precision"] == forced
    evaluated = json.loads(run_hubtune("eval", str(out), str(table), "--cache", cache, "--json", env=env).stdout)
    assert evaluated["n"] == len(words)
    inputs = [POSITIVE[0], NEGATIVE[0], POSITIVE[5], "marvellous"]  # three the store holds, one it does not
    predicted = json.loads(run_hubtune("predict", str(out), *inputs, "--cache", cache, "--json",
                                       env={"HUBTUNE_AUTO_PRECISION": other}).stdout)

    exported = tmp_path / "export"
    with EmbeddingStore(cache, readonly=True) as store:
        fingerprints = store.fingerprints()
        assert list(fingerprints) == [head.model["fingerprint"]], "eval or predict made vectors with another backbone"
        assert fingerprints[head.model["fingerprint"]]["fields"]["precision"] == forced
        export_dataset(store, head.model["fingerprint"], "words", exported)  # what `hubtune export` writes
        new_vector = store.get(head.model["fingerprint"], [content_key(b"marvellous")])  # cached by predict
    row_of = {json.loads(line)["key"]: i for i, line in enumerate((exported / "items.jsonl").read_text().splitlines())}
    vectors = np.load(exported / "embeddings.npy")
    assert len(vectors) == len(row_of) == len(words)
    known = np.stack([vectors[row_of[content_key(text.encode()).hex()]] for text in inputs[:3]])
    expected = head.probabilities(np.concatenate([known, new_vector.astype(np.float32)]), head.model["fingerprint"])
    assert [row["input"] for row in predicted] == inputs
    assert [row["label"] for row in predicted] == [head.classes[int(p.argmax())] for p in expected]
    np.testing.assert_allclose([row["score"] for row in predicted], expected.max(1), atol=1e-6)
