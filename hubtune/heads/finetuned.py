"""A fine-tuned head as :func:`hubtune.heads.use.load_head` returns it: the saved
:class:`~hubtune.finetune.saved.FinetunedHead` with the Python API of every head
(:class:`~hubtune.heads.protocol.HeadMethods`: ``predict``, ``predict_proba``, ``evaluate``).

Imported only when a fine-tuned head is loaded (``heads`` reaches ``finetune`` lazily).
"""

from __future__ import annotations

from hubtune.finetune.saved import FinetunedHead
from hubtune.heads.protocol import HeadMethods


class LoadedFinetunedHead(FinetunedHead, HeadMethods):
    """A :class:`FinetunedHead` (its files, binding and probabilities) with the head methods."""
