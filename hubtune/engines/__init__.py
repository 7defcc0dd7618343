"""Distributed engines for ``hubtune extract``: each maps :func:`hubtune.shards.run_shard` over a plan.

``ray`` (Ray Data, ``pip install hubtune[ray]``) and ``torchrun`` (no extra dependency) share the
plan, the shard files and the merge; :mod:`hubtune.engines.driver` is the flow both follow.
"""
