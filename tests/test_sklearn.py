"""``hubtune.sklearn``: ``HeadClassifier`` passes scikit-learn's ``check_estimator``; ``Embedder`` passes the
checks that apply to an estimator of texts (the rest feed it numeric arrays: see its docstring), works
in a pipeline, and a grid search over a cached ``Embedder`` embeds each input once."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.utils import estimator_checks as checks  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import hubtune  # noqa: E402
from hubtune.sklearn import Embedder, HeadClassifier  # noqa: E402

MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"
POSITIVE = ["wonderful", "delightful", "excellent", "superb", "lovely", "brilliant", "joyful", "fantastic", "pleasant"]
NEGATIVE = ["awful", "terrible", "horrible", "dreadful", "miserable", "disgusting", "nasty", "tragic", "painful"]
TEXTS = POSITIVE + NEGATIVE
LABELS = ["pos"] * len(POSITIVE) + ["neg"] * len(NEGATIVE)


@parametrize_with_checks([HeadClassifier(), HeadClassifier("knn"), HeadClassifier("mlp", epochs=20)])
def test_head_classifier_passes_check_estimator(estimator, check) -> None:
    check(estimator)


#: the checks that apply to an estimator whose inputs are texts (the others feed it numeric arrays)
EMBEDDER_CHECKS = ["check_estimator_cloneable", "check_estimator_repr", "check_estimator_tags_renamed",
                   "check_valid_tag_types", "check_no_attributes_set_in_init", "check_get_params_invariance",
                   "check_set_params", "check_mixin_order", "check_do_not_raise_errors_in_init_or_set_params",
                   "check_estimators_overwrite_params", "check_estimators_fit_returns_self",
                   "check_parameters_default_constructible"]


@pytest.mark.parametrize("name", EMBEDDER_CHECKS)
def test_embedder_passes_the_checks_that_apply(name: str) -> None:
    getattr(checks, name)("Embedder", Embedder(MODEL, precision="fp32"))


def test_embedder_defaults_to_the_embedded_model() -> None:
    assert Embedder().get_params()["model"] == MODEL


def test_embedder_fit_loads_nothing_and_transform_equals_embed(tmp_path: Path, monkeypatch) -> None:
    import hubtune.api as api_module

    estimator = Embedder(MODEL, cache=tmp_path / "cache", precision="fp32")
    with monkeypatch.context() as patch:
        patch.setattr(api_module, "load_backbone", lambda *a, **k: pytest.fail("fit must load no model"))
        assert estimator.fit(TEXTS, LABELS) is estimator
    assert estimator.__sklearn_tags__().requires_fit is False  # stateless, as HashingVectorizer
    vectors = Embedder(MODEL, precision="fp32").transform(np.array(TEXTS[:4], dtype=object).reshape(-1, 1))
    np.testing.assert_allclose(vectors, hubtune.embed(MODEL, TEXTS[:4], precision="fp32"), atol=1e-6)
    cached = estimator.fit_transform(TEXTS)
    np.testing.assert_array_equal(cached, hubtune.embed(MODEL, TEXTS, cache=tmp_path / "cache", precision="fp32"))

    copy = clone(estimator)  # the parameters, not the loaded model
    assert copy.get_params() == estimator.get_params() and "_kept" not in vars(copy) and "_kept" in vars(estimator)
    restored = pickle.loads(pickle.dumps(estimator))
    assert "_kept" not in vars(restored)
    np.testing.assert_array_equal(restored.transform(TEXTS), cached)
    with pytest.raises(hubtune.errors.InputError, match="#1 '': empty text"):
        estimator.transform(["fine", ""])


def test_pipeline_and_grid_search_embed_each_input_once(tmp_path: Path, monkeypatch) -> None:
    """A GridSearchCV over ``make_pipeline(Embedder(cache=...), LogisticRegression())`` clones the
    pipeline for every candidate and fold; the store answers every transform after the first
    embedding, so each input is preprocessed and embedded once and the model is loaded once."""
    import hubtune.api as api_module
    from hubtune.backbone import Backbone

    loads, embedded = [], []
    load = api_module.load_backbone

    def counted_load(*args, **kwargs):
        loads.append(args[0])
        return load(*args, **kwargs)

    forward = Backbone.embed_batch

    def counted_forward(self, batch):
        vectors = forward(self, batch)
        embedded.append(len(vectors))
        return vectors

    monkeypatch.setattr(api_module, "load_backbone", counted_load)
    monkeypatch.setattr(Backbone, "embed_batch", counted_forward)
    pipe = make_pipeline(Embedder(MODEL, cache=tmp_path / "cache", precision="fp32"), LogisticRegression())
    search = GridSearchCV(pipe, {"logisticregression__C": [0.1, 1.0, 10.0]}, cv=3).fit(TEXTS, LABELS)
    assert len(loads) == 1
    assert sum(embedded) == len(TEXTS) + 1  # every text once, plus the one probe that measures the width
    assert search.best_estimator_.predict(["marvellous", "horrid"]).tolist() == ["pos", "neg"]
    assert search.score(TEXTS, LABELS) == 1.0


def test_head_classifier_fits_the_head_hubtune_train_fits(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hubtune.cli import cli

    table = tmp_path / "words.jsonl"
    table.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(TEXTS, LABELS)))
    cache = hubtune.Cache(tmp_path / "cache")
    cache.extract(MODEL, table, precision="fp32")
    vectors = cache.vectors(MODEL, "words")
    out = tmp_path / "head"
    result = CliRunner().invoke(cli, ["train", "--cache", str(cache), "--model", MODEL, "--dataset", "words",
                                      "--head", "linear", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    trained = hubtune.load_head(out)
    classifier = HeadClassifier("linear").fit(vectors.array, np.array(vectors.labels))
    assert classifier.classes_.tolist() == trained.classes and classifier.n_features_in_ == 384
    assert classifier.head_.hyperparameters["C"] == trained.hyperparameters["C"]
    queries = hubtune.embed(MODEL, ["marvellous", "horrid"], cache=cache, precision="fp32")
    np.testing.assert_allclose(classifier.predict_proba(queries), trained.predict_proba(queries), atol=1e-9)
    assert classifier.predict(queries).tolist() == trained.predict(queries) == ["pos", "neg"]
    pipe = make_pipeline(Embedder(MODEL, cache=cache, precision="fp32"), HeadClassifier("knn", k=3)).fit(TEXTS, LABELS)
    assert pipe.predict(["marvellous", "horrid"]).tolist() == ["pos", "neg"]


def test_a_saved_head_classifier_keeps_its_class_names_and_asks_for_vectors(tmp_path: Path) -> None:
    from hubtune.errors import HeadError

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-1, 0.3, (10, 8)), rng.normal(1, 0.3, (10, 8))]).astype(np.float32)
    classifier = HeadClassifier("knn", k=3).fit(X, ["alpha"] * 10 + ["beta"] * 10)
    classifier.head_.save(tmp_path / "head")
    loaded = hubtune.load_head(tmp_path / "head")
    assert loaded.classes == ["alpha", "beta"]
    assert loaded.predict(X[[0, -1]]) == ["alpha", "beta"]
    with pytest.raises(HeadError, match="records no backbone"):
        loaded.predict(["some text"])
