"""Runs past one process: ``hubtune extract --engine ray|torchrun``, ``merge``.

``shards`` plans a dataset into shards (a folder any worker can write: the plan, per-shard item
lists, vectors, markers) and runs one (:func:`hubtune.scale.shards.run_shard`); ``merge`` imports a
finished folder into the store. The engines map the shards over workers: ``ray_engine`` (Ray Data,
``pip install hubtune[ray]``, with optional CPU decode actors in ``decode_stage``) and
``torchrun_engine`` (no extra dependency); ``driver`` is the flow both follow (plan, run, merge).
"""
