"""Rank backbones for a labelled dataset: ``hubtune compare REF... --data DATA`` and ``hubtune.compare``.

``run`` is the flow (per model: load, extract through the store, fit the kNN head and the linear
probe with ``hubtune train``'s code, score them as ``hubtune eval`` does, measure items/s); ``split``
decides which items the heads are fitted and scored on (the dataset's ``test`` split, or a seeded
stratified hold-out); ``rank`` orders the rows, marks the Pareto front and plots it.

``hubtune.compare`` is both this package and the function: the package is callable, so
``hubtune.compare(models, data, ...)`` works whichever of the two an import left there.
"""

import sys
import types
from typing import Any

from hubtune.compare.rank import PLOT_FORMATS, check_plot_path, mark_pareto, plot, plottable, ranked
from hubtune.compare.run import FIELDS, TIMED_ITEMS, compare
from hubtune.compare.split import HOLDOUT, EvaluationSplit, evaluation_split

__all__ = ["FIELDS", "HOLDOUT", "PLOT_FORMATS", "TIMED_ITEMS", "EvaluationSplit", "check_plot_path", "compare",
           "evaluation_split", "mark_pareto", "plot", "plottable", "ranked"]


class CallablePackage(types.ModuleType):
    """Importing the submodule ``hubtune.compare`` sets ``hubtune.compare`` to it; calling it calls
    :func:`compare`, so ``hubtune.compare(...)`` means the function either way."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return compare(*args, **kwargs)


sys.modules[__name__].__class__ = CallablePackage
