"""hubtune: transfer learning on frozen hub models.

Embed data once with any hub backbone, cache the vectors, train small heads on them in seconds.
Importing this package is cheap: torch, transformers and faiss load only when a model is used.

The Python API: ``embed(model, inputs, cache=...)``, ``Cache(path)`` (``datasets``, ``vectors``,
``extract``, ``export``, ``verify``, ...), ``train_head(cache, model, dataset, head)`` and
``load_head(path)`` (heads with ``predict``, ``predict_proba``, ``evaluate``, ``save``), ``compare``,
``load_backbone``, ``pull``; scikit-learn estimators in :mod:`hubtune.sklearn`. Errors are the
classes of :mod:`hubtune.errors`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Backbone": "hubtune.backbone",
    "ImagePreprocessor": "hubtune.backbone",
    "LoadOptions": "hubtune.backbone",
    "Preprocessor": "hubtune.backbone",
    "Weights": "hubtune.backbone",
    "ModelRef": "hubtune.refs",
    "parse_ref": "hubtune.refs",
    "resolve_ref": "hubtune.registry",
    "get_sources": "hubtune.registry",
    "Source": "hubtune.sources",
    "ModelInfo": "hubtune.sources",
    "PullResult": "hubtune.sources",
    "hookimpl": "hubtune.hookspecs",
    "load_backbone": "hubtune.api",
    "pull": "hubtune.api",
    "compute_fingerprint": "hubtune.fingerprint",
    "compare": "hubtune.compare",
    "embed": "hubtune.embedding",
    "Embedded": "hubtune.embedding",
    "Cache": "hubtune.cache",
    "Vectors": "hubtune.cache",
    "train_head": "hubtune.heads.fit",
    "load_head": "hubtune.heads.use",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hubtune' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
