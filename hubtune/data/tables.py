"""Table datasets: ``.jsonl`` / ``.csv`` / ``.tsv`` with a ``text`` or a ``path`` column (paths
relative to the table's folder), an optional ``label`` and an optional ``split``; a leading UTF-8
byte-order mark is ignored. A row whose bytes are not UTF-8 is still an item (keyed by those bytes,
its annotations read leniently) whose payload the preprocessor rejects, so one stray byte costs that
row an error record, not the whole table.
"""

from __future__ import annotations

import csv
import json
from itertools import zip_longest
from pathlib import Path
from typing import Iterator, TextIO

from hubtune.data.items import Item, content_key, file_key, text_key
from hubtune.errors import DatasetError

TABLE_SUFFIXES = {".jsonl": "jsonl", ".csv": ",", ".tsv": "\t"}


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


def table_columns(path: Path) -> str:
    """``text`` or ``path``: the column the table's first row names its payload by."""
    for _, row, _ in _rows(path):
        if "text" in row:
            return "text"
        if "path" in row:
            return "path"
        raise DatasetError(f"{path}: rows need a 'text' or a 'path' column, found {sorted(row)}")
    raise DatasetError(f"{path}: the table has no rows")


def iter_table(path: Path) -> Iterator[Item]:
    """The table's items, row by row."""
    column = table_columns(path)
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
            yield Item(text_key(text), label, split, origin, text=text)
        else:
            file = (base / str(value or "")).resolve()
            key = file_key(file) if file.is_file() else content_key(f"missing:{file}".encode())
            yield Item(key, label, split, origin, path=str(file))
