"""Datasets: a folder of class subfolders, or a ``.jsonl`` / ``.csv`` / ``.tsv`` table.

Every item carries a content key (blake2b-128 of its raw bytes; UTF-8 for text), a label, a split
and an origin (the absolute file path, or ``FILE:LINE`` for a table row). The key is what the
store indexes, so the same image under two paths, or in two datasets, is embedded once.

Folder layouts::

    data/cat/1.jpg, data/dog/2.jpg                 -> labels cat, dog; split train
    data/train/cat/1.jpg, data/val/cat/9.jpg       -> splits from the top folder names
    data/pos/a.txt, data/neg/b.txt                 -> text items (.txt files)

Tables have a ``text`` or a ``path`` column (paths relative to the table's folder), an optional
``label`` and an optional ``split``; a leading UTF-8 byte-order mark is ignored. A row whose bytes
are not UTF-8 is still an item (keyed by those bytes, its annotations read leniently) whose payload
the preprocessor rejects, so one stray byte costs that row an error record, not the whole table.

Reading an item's bytes for hashing does not decode it; decoding happens in the extractor's
workers, and only for items the store does not already hold.

Modules: ``items`` (an item and its content key), ``folders`` and ``tables`` (the two layouts),
``dataset`` (:class:`Dataset`, :func:`open_dataset`); this package re-exports their API.
"""

from hubtune.data.dataset import Dataset, open_dataset
from hubtune.data.folders import IMAGE_SUFFIXES, SPLITS, TEXT_SUFFIXES
from hubtune.data.items import Item, content_key
from hubtune.data.tables import TABLE_SUFFIXES
from hubtune.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "SPLITS", "TABLE_SUFFIXES", "TEXT_SUFFIXES", "Dataset", "DatasetError", "Item",
           "content_key", "open_dataset"]
