"""The batch extractor: embed a dataset (or one shard of it) into the store, once.

``run`` is the flow (:func:`extract`: list, find the fingerprint, skip what is stored, embed the
rest, record the manifest last); ``batches`` reads and preprocesses items into batches;
``streams`` runs the model (chunked, in parallel streams) and commits batches from a writer thread.
"""

from hubtune.errors import TooManyFailures
from hubtune.extract.batches import prepare_items
from hubtune.extract.options import ExtractOptions, ExtractSummary
from hubtune.extract.run import extract
from hubtune.extract.streams import cpu_streams

__all__ = ["ExtractOptions", "ExtractSummary", "TooManyFailures", "cpu_streams", "extract", "prepare_items"]
