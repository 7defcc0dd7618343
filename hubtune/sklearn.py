"""scikit-learn estimators: :class:`Embedder` (inputs -> vectors) and :class:`HeadClassifier` (hubtune's heads).

``pip install 'hubtune[sklearn]'``; this module is the only one that imports scikit-learn. Both follow
scikit-learn's conventions (every parameter explicit in ``__init__`` and stored as given, ``get_params``
/ ``set_params`` / ``clone``, ``fit`` returns ``self``, fitted attributes end in ``_``)::

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from hubtune.sklearn import Embedder, HeadClassifier

    pipe = make_pipeline(Embedder("hf:sentence-transformers/all-MiniLM-L6-v2", cache="cache"), LogisticRegression())
    GridSearchCV(pipe, {"logisticregression__C": [0.1, 1, 10]}, cv=3).fit(texts, labels)

With a ``cache`` every input is embedded once, however many clones a search makes: later transforms read
the store (and load no model when it holds them all). Without one, each estimator instance keeps the
backbone it loaded and embeds again on every ``transform``.

**Embedder and ``check_estimator``.** Its inputs are texts or image paths (tags: one-dimensional string
input), so ``check_estimator`` itself runs nothing but ``check_estimator_cloneable`` on it, and the checks
that feed an estimator numeric arrays cannot apply: a number is not a text (``InputError``), and they
expect 2-D numeric output checks, ``n_features_in_``, or refusals of NaN, complex, sparse or empty
numeric data: ``check_fit_score_takes_y``, ``check_dont_overwrite_parameters``,
``check_n_features_in``, ``check_n_features_in_after_fitting``, ``check_estimators_dtypes``,
``check_complex_data``, ``check_dtype_object``, ``check_estimators_empty_data_messages``,
``check_estimators_nan_inf``, ``check_estimator_sparse_tag``, ``check_estimator_sparse_array``,
``check_f_contiguous_array_estimator``, ``check_pipeline_consistency``, ``check_estimators_pickle``,
``check_transformer_general``, ``check_transformer_data_not_an_array``, ``check_transformer_preserve_dtypes``,
``check_methods_sample_order_invariance``, ``check_methods_subset_invariance``, ``check_fit2d_1sample``,
``check_fit2d_1feature``, ``check_fit1d``, ``check_fit2d_predict1d``, ``check_fit_idempotent``,
``check_dict_unchanged``. Like scikit-learn's ``HashingVectorizer`` it is stateless (tag
``requires_fit=False``: ``fit`` returns ``self``, ``transform`` works unfitted), so
``check_fit_check_is_fitted`` and ``check_transformers_unfitted`` do not apply either; and its ``transform``
keeps the loaded backbone on the instance (a cache of the model, not a fitted parameter, dropped by
``clone`` and pickling), the one departure from "transform leaves the estimator unchanged" that
``check_dict_unchanged`` would see. ``tests/test_sklearn.py`` runs the checks that apply
(``check_estimator_cloneable``, ``check_estimator_repr``, ``check_estimator_tags_renamed``,
``check_valid_tag_types``, ``check_no_attributes_set_in_init``, ``check_get_params_invariance``,
``check_set_params``, ``check_mixin_order``, ``check_do_not_raise_errors_in_init_or_set_params``,
``check_estimators_overwrite_params``, ``check_estimators_fit_returns_self``,
``check_parameters_default_constructible``) and text versions of the pickle, clone and
``fit_transform`` checks.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from hubtune.constants import DEFAULT_MODEL
from hubtune.embedding import MODEL_OPTIONS, Backbones, Settings, embed_values, inputs_error, load_options

#: the head kinds HeadClassifier fits (zeroshot builds from class names, not from X)
HEADS = ("linear", "mlp", "knn")


def _validated(estimator: BaseEstimator, X: Any, y: Any = None, *, reset: bool = True) -> Any:
    """``X`` (and ``y``) checked as scikit-learn checks them: float arrays, ``n_features_in_`` set or compared."""
    dtype = [np.float32, np.float64]
    try:
        from sklearn.utils.validation import validate_data
    except ImportError:  # scikit-learn < 1.6: the method it replaced
        return estimator._validate_data(X, *(() if y is None else (y,)), reset=reset, dtype=dtype)
    if y is None:
        return validate_data(estimator, X, reset=reset, dtype=dtype)
    return validate_data(estimator, X, y, reset=reset, dtype=dtype)


def _inputs(X: Any) -> list[Any]:
    """Texts or image paths as a list: a list, a tuple, a 1-D array / Series, or a single-column 2-D one."""
    if isinstance(X, (str, bytes)):
        raise ValueError("Embedder takes an iterable of inputs (texts or image paths); got a single string")
    if isinstance(X, (list, tuple)):
        return list(X)
    if hasattr(X, "iloc") and getattr(X, "ndim", 1) == 2:  # a one-column DataFrame
        X = X.iloc[:, 0]
    values = np.asarray(X, dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"Embedder takes one input per sample (a 1-D list of texts or paths), got shape {values.shape}")
    return values.tolist()


class Embedder(TransformerMixin, BaseEstimator):
    """Texts or image paths -> ``(n, dim)`` float32 vectors by ``model`` (:func:`hubtune.embed`).

    ``cache`` (a folder or a :class:`hubtune.Cache`; None: no store) is read and filled as ``hubtune extract``
    fills it. The other parameters are the shared model options (``layer``, ``pool``, ``precision``,
    ``device``, ``weights``, ``offline``, ``trust_remote_code``, ``prompt``, ``prompt_text``, ``dim``, ``tower``)
    and ``batch_size`` / ``stored_dtype``. An input that cannot be embedded raises one
    :class:`hubtune.errors.InputError` naming every such input.
    """

    def __init__(self, model: str = DEFAULT_MODEL, cache: Any = None, *, layer: str | None = None,
                 pool: str | None = None, precision: str = "auto", device: str = "auto", weights: str = "default",
                 offline: bool = False, trust_remote_code: bool = False, prompt: str | None = None,
                 prompt_text: str | None = None, dim: int | None = None, tower: str | None = None,
                 batch_size: int = 64, stored_dtype: str = "float16"):
        self.model = model
        self.cache = cache
        self.layer = layer
        self.pool = pool
        self.precision = precision
        self.device = device
        self.weights = weights
        self.offline = offline
        self.trust_remote_code = trust_remote_code
        self.prompt = prompt
        self.prompt_text = prompt_text
        self.dim = dim
        self.tower = tower
        self.batch_size = batch_size
        self.stored_dtype = stored_dtype

    def _backbones(self) -> Backbones:
        """The backbone this instance loaded (per tower), kept while its parameters stay the same."""
        options = load_options(None, {name: getattr(self, name) for name in MODEL_OPTIONS}, "Embedder")
        kept = self.__dict__.get("_kept")
        if kept is None or kept.ref != self.model or kept.options != options:
            kept = self.__dict__["_kept"] = Backbones(self.model, options)
        return kept

    def fit(self, X: Any = None, y: Any = None) -> "Embedder":
        """Nothing to learn (and nothing is loaded): returns ``self``."""
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``(len(X), dim)`` float32 vectors, in order."""
        keeper = self._backbones()
        vectors, failed = embed_values(self.model, _inputs(X), self.cache, keeper.options,
                                       Settings(stored_dtype=self.stored_dtype, batch_size=self.batch_size),
                                       backbones=keeper)
        if failed:
            raise inputs_error(failed, len(vectors))
        return vectors

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_kept", None)  # a loaded network is not part of the estimator
        return state

    def _more_tags(self) -> dict[str, Any]:  # scikit-learn < 1.6
        return {"requires_fit": False, "no_validation": True, "X_types": ["string"]}

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.no_validation = True
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True
        return tags


class HeadClassifier(ClassifierMixin, BaseEstimator):
    """A hubtune head (``linear``, ``mlp`` or ``knn``) fitted on vectors ``X`` and labels ``y``.

    Fitted as ``hubtune train`` fits it (:func:`hubtune.heads.training.train_head`): a stratified 10 % of
    ``X`` (seed 0) is the validation split (``linear`` picks ``C`` on it, then refits on everything; ``mlp``
    stops early on it). The parameters are ``train``'s: ``normalise`` (``none``, ``l2``, ``standardise``;
    default standardise for linear/mlp, l2 for knn), ``balanced``, ``C``, ``k``, ``temperature``,
    ``hidden``, ``epochs``; ``random_state`` seeds the mlp. Fitted: ``classes_``, ``n_features_in_``
    and ``head_`` (the :class:`~hubtune.heads.trained.TrainedHead`, which ``head_.save(folder)`` writes).
    """

    def __init__(self, head: str = "linear", *, normalise: str | None = None, balanced: bool = False,
                 C: float | None = None, k: int = 20, temperature: float = 0.07, hidden: int = 512,
                 epochs: int = 100, random_state: int = 0):
        self.head = head
        self.normalise = normalise
        self.balanced = balanced
        self.C = C
        self.k = k
        self.temperature = temperature
        self.hidden = hidden
        self.epochs = epochs
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> "HeadClassifier":
        if y is None:  # scikit-learn's wording (check_requires_y_none)
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        from hubtune.heads.fit import check_hyperparameters
        from hubtune.heads.mlp import MLPConfig
        from hubtune.heads.training import train_head
        from hubtune.store.vectors import DatasetVectors

        if self.head not in HEADS:
            raise ValueError(f"head={self.head!r}; HeadClassifier fits one of {', '.join(HEADS)}")
        check_hyperparameters(self.head, self.C, self.k, self.temperature, self.hidden, self.epochs, ())
        X, y = _validated(self, X, y)
        check_classification_targets(y)
        self.classes_, encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"HeadClassifier needs at least 2 classes; the data has only one class: {self.classes_[0]!r}")
        width = len(str(len(self.classes_)))
        labels: list[str | None] = [f"{i:0{width}d}" for i in encoded]  # sorted as the heads sort their classes
        data = DatasetVectors(np.asarray(X, dtype=np.float32), [""] * len(labels), labels, ["train"] * len(labels),
                              [""] * len(labels), 0)
        model: dict[str, Any] = {"ref": None, "fingerprint": None, "options": {}}
        self.head_ = train_head(data, self.head, model, normalisation=self.normalise, balanced=self.balanced,
                                C=self.C, k=self.k, temperature=self.temperature,
                                mlp_config=MLPConfig(hidden=self.hidden, epochs=self.epochs, seed=self.random_state))
        self.head_.classes = [str(name) for name in self.classes_]  # columns stay in classes_ order; saved by name
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(n, len(classes_))`` probabilities, columns in ``classes_`` order."""
        check_is_fitted(self)
        X = _validated(self, X, reset=False)
        return self.head_.probabilities(np.asarray(X, dtype=np.float32))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each row (an element of ``classes_``)."""
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(1)]
