"""The ``hubtune`` command line (``hubtune.cli:main`` is the console script).

:mod:`hubtune.cli.app` is the click group; each command group has its module beside it: ``models``
(sources, models, pull, info), ``demo``, ``store`` (extract, export, cache), ``search`` (index,
search), ``heads`` (train, eval, predict), ``finetune`` (finetune, export-model), ``bench`` and
``scale`` (the distributed engines, merge, index build-sharded); ``common`` holds what they share.
Heavy libraries are imported inside commands, so ``hubtune --help`` stays instant.
"""

from hubtune.cli.app import cli, main

__all__ = ["cli", "main"]
