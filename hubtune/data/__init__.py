"""Datasets: a folder of class subfolders, or a ``.jsonl`` / ``.csv`` / ``.tsv`` table (:mod:`.dataset`)."""

from hubtune.data.dataset import (
    IMAGE_SUFFIXES,
    SPLITS,
    TABLE_SUFFIXES,
    TEXT_SUFFIXES,
    Dataset,
    DatasetError,
    Item,
    content_key,
    open_dataset,
)

__all__ = ["IMAGE_SUFFIXES", "SPLITS", "TABLE_SUFFIXES", "TEXT_SUFFIXES", "Dataset", "DatasetError", "Item",
           "content_key", "open_dataset"]
