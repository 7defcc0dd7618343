"""Folder datasets: one subfolder per class, optionally under ``train/val/test``::

    data/cat/1.jpg, data/dog/2.jpg                 -> labels cat, dog; split train
    data/train/cat/1.jpg, data/val/cat/9.jpg       -> splits from the top folder names
    data/pos/a.txt, data/neg/b.txt                 -> text items (.txt files)
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from hubtune.data.items import Item, content_key, file_key

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
TEXT_SUFFIXES = {".txt"}
SPLITS = ("train", "val", "test")


def class_folders(root: Path) -> list[tuple[str, Path]]:
    """(split, class folder) pairs, honouring an optional train/val/test top level."""
    children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if children and all(child.name in SPLITS for child in children):
        return [(child.name, sub) for child in children for sub in sorted(child.iterdir()) if sub.is_dir()]
    return [("train", child) for child in children]


def folder_modality(root: Path) -> str:
    suffixes = {p.suffix.lower() for p in root.rglob("*") if p.is_file()}
    if suffixes & TEXT_SUFFIXES and not suffixes & IMAGE_SUFFIXES:
        return "text"
    return "image"


def iter_folder(root: Path) -> Iterator[Item]:
    """The folder's items, class by class, files in name order."""
    modality = folder_modality(root)
    wanted = TEXT_SUFFIXES if modality == "text" else IMAGE_SUFFIXES
    for split, folder in class_folders(root):
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in wanted):
            path = path.resolve()
            if modality == "text":
                data = path.read_bytes()
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError:
                    text = None  # kept as bytes: the preprocessor records the decode error
                yield Item(content_key(data), folder.name, split, str(path), text=text,
                           path=None if text is not None else str(path))
            else:
                yield Item(file_key(path), folder.name, split, str(path), path=str(path))
