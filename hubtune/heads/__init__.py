"""Heads trained on cached vectors: ``linear`` (logistic regression), ``mlp`` and ``knn``."""
