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
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from typing import Iterator, TextIO

from hubtune.errors import HubtuneError
from hubtune.fingerprint import hash_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
TEXT_SUFFIXES = {".txt"}
SPLITS = ("train", "val", "test")
TABLE_SUFFIXES = {".jsonl": "jsonl", ".csv": ",", ".tsv": "\t"}


class DatasetError(HubtuneError, ValueError):
    """The data given to a command is not a dataset hubtune can read."""

    exit_code = 2


@dataclass(frozen=True)
class Item:
    """One input: its raw payload (text, or a file path to read), key and annotations."""

    key: bytes  # blake2b-128 of the raw bytes
    label: str | None
    split: str
    origin: str
    text: str | None = None  # text items keep their text
    path: str | None = None  # file items are read again by the extractor's workers
    data: bytes | None = None  # a table row that is not UTF-8 keeps its bytes

    def raw(self) -> str | bytes:
        """What a backbone's preprocessor takes: the text, the row's bytes (which it rejects with the
        reason), or the file's bytes."""
        if self.text is not None:
            return self.text
        if self.data is not None:
            return self.data
        return Path(self.path).read_bytes()


def content_key(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def _text_key(text: str) -> bytes:
    return content_key(text.encode("utf-8", errors="surrogatepass"))


def _file_key(path: Path) -> bytes:
    return hash_file(path, hashlib.blake2b(digest_size=16)).digest()


@dataclass(frozen=True)
class Dataset:
    """A readable dataset: where it is and what kind of items it holds."""

    location: Path
    modality: str  # "image" | "text"

    def __iter__(self) -> Iterator[Item]:
        if self.location.is_dir():
            yield from _iter_folder(self.location)
        else:
            yield from _iter_table(self.location)

    def items(self) -> list[Item]:
        return list(self)

    def name(self, given: str | None = None) -> str:
        """The name the store records it under: ``given`` (``""`` too), else the file or folder name;
        checked now, so a name the store would refuse stops a run before its work, not after."""
        from hubtune.store import check_dataset_name

        return check_dataset_name(given if given is not None else self.location.stem)


def _class_folders(root: Path) -> list[tuple[str, Path]]:
    """(split, class folder) pairs, honouring an optional train/val/test top level."""
    children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if children and all(child.name in SPLITS for child in children):
        return [(child.name, sub) for child in children for sub in sorted(child.iterdir()) if sub.is_dir()]
    return [("train", child) for child in children]


def _folder_modality(root: Path) -> str:
    suffixes = {p.suffix.lower() for p in root.rglob("*") if p.is_file()}
    if suffixes & TEXT_SUFFIXES and not suffixes & IMAGE_SUFFIXES:
        return "text"
    return "image"


def _iter_folder(root: Path) -> Iterator[Item]:
    modality = _folder_modality(root)
    wanted = TEXT_SUFFIXES if modality == "text" else IMAGE_SUFFIXES
    for split, folder in _class_folders(root):
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
                yield Item(_file_key(path), folder.name, split, str(path), path=str(path))


Row = tuple[int, dict, bytes | None]  # (line the row starts on, its fields, its bytes if they are not UTF-8)


def _rows(path: Path) -> Iterator[Row]:
    """The table's rows. Bytes that are not UTF-8 are read as surrogate escapes (the C decoder's
    speed, no per-row decoding in Python), which one encode per row then finds."""
    kind = TABLE_SUFFIXES[path.suffix.lower()]
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        yield from (_jsonl_rows(path, handle) if kind == "jsonl" else _csv_rows(handle, kind))


def _undecodable(text: str) -> bytes | None:
    """The bytes behind ``text`` when some were not UTF-8 (read as surrogate escapes), else None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")
    return None


def _lenient(data: bytes) -> str:
    """A row that is not UTF-8, readable (U+FFFD for the bad bytes): its item fails anyway, but its
    label and split still go into the manifest, which must hold valid text."""
    return data.decode("utf-8", "replace")


def _jsonl_rows(path: Path, handle: TextIO) -> Iterator[Row]:
    for number, line in enumerate(handle, start=1):
        if line.strip():
            data = _undecodable(line)  # checked before parsing: JSON escapes may spell surrogates too
            try:
                row = json.loads(line if data is None else _lenient(data))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not valid JSON: {exc}") from exc
            yield number, row, None if data is None else data.rstrip(b"\r\n")


def _csv_rows(handle: TextIO, delimiter: str) -> Iterator[Row]:
    reader = csv.reader(handle, delimiter=delimiter)
    header = next(reader, [])
    end = reader.line_num
    for fields in reader:
        start, end = end + 1, reader.line_num  # line_num is where a record ends; a quoted field may span lines
        if fields:  # a blank line is no row
            data = _undecodable(delimiter.join(fields))
            if data is not None:
                fields = [_lenient(field.encode("utf-8", "surrogateescape")) for field in fields]
            yield start, dict(zip_longest(header, fields)), data  # a short row reads None, as in csv.DictReader


def _table_columns(path: Path) -> str:
    for _, row, _ in _rows(path):
        if "text" in row:
            return "text"
        if "path" in row:
            return "path"
        raise DatasetError(f"{path}: rows need a 'text' or a 'path' column, found {sorted(row)}")
    raise DatasetError(f"{path}: the table has no rows")


def _iter_table(path: Path) -> Iterator[Item]:
    column = _table_columns(path)
    table = path.resolve()
    base = table.parent
    for number, row, data in _rows(path):
        origin = f"{table}:{number}"
        label = row.get("label")
        label = None if label in (None, "") else str(label)
        split = str(row.get("split") or "train")
        value = row.get(column)
        if data is not None:
            yield Item(content_key(data), label, split, origin, data=data)
        elif column == "text":
            text = "" if value is None else str(value)
            yield Item(_text_key(text), label, split, origin, text=text)
        else:
            file = (base / str(value or "")).resolve()
            key = _file_key(file) if file.is_file() else content_key(f"missing:{file}".encode())
            yield Item(key, label, split, origin, path=str(file))


def open_dataset(location: str | Path) -> Dataset:
    """Recognise the dataset at ``location``; the error says which layouts are accepted."""
    path = Path(location).expanduser()
    if path.is_dir():
        if not _class_folders(path):
            raise DatasetError(f"{path}: a folder dataset needs one subfolder per class (optionally under train/val/test)")
        return Dataset(path, _folder_modality(path))
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        return Dataset(path, "text" if _table_columns(path) == "text" else "image")
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    raise DatasetError(
        f"{path}: expected a folder with one subfolder per class, or a .jsonl/.csv/.tsv file with a "
        "'text' or 'path' column"
    )
