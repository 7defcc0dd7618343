"""The batch extractor: embed a dataset (or one shard of it) into the store, once (:mod:`.run`)."""

from hubtune.extract.run import ExtractSummary, TooManyFailures, cpu_streams, extract, prepare_items

__all__ = ["ExtractSummary", "TooManyFailures", "cpu_streams", "extract", "prepare_items"]
