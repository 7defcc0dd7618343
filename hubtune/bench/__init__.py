"""Benchmarks a user runs with ``hubtune bench``: the model-only grid (:mod:`.grid`) and the
end-to-end stage breakdown (:mod:`.e2e`)."""
