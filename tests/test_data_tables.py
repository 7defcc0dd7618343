"""Tables as datasets: rows that are not UTF-8, a byte-order mark, and FILE:LINE origins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hubtune
from hubtune.data import DatasetError, open_dataset
from hubtune.extract import extract
from hubtune.store import EmbeddingStore
from hubtune.store.vectors import load_dataset_vectors

MODEL = "hf:sentence-transformers/all-MiniLM-L6-v2"
BOM = b"\xef\xbb\xbf"

# One row (on line 3 of each file) holds a Latin-1 byte; the other three rows are good UTF-8.
TABLES = {
    "csv": b'text,label,split\nI love this movie,pos,train\ncaf\xe9 bad,neg,train\n'
           b'"tr\xc3\xa8s bon",pos,val\nthe soup was cold,neg,train\n',
    "tsv": b"text\tlabel\tsplit\nI love this movie\tpos\ttrain\ncaf\xe9 bad\tneg\ttrain\n"
           b"tr\xc3\xa8s bon\tpos\tval\nthe soup was cold\tneg\ttrain\n",
    "jsonl": b'{"text": "I love this movie", "label": "pos"}\n\n{"text": "caf\xe9 bad", "label": "neg"}\n'
             b'{"text": "tr\xc3\xa8s bon", "label": "pos", "split": "val"}\n'
             b'{"text": "the soup was cold", "label": "neg"}\n',
}
GOOD_LINES = {"csv": [2, 4, 5], "tsv": [2, 4, 5], "jsonl": [1, 4, 5]}
BAD_LINE = 3


@pytest.fixture(scope="module")
def minilm() -> hubtune.Backbone:
    return hubtune.load_backbone(MODEL, device="cpu", precision="fp32")


def _table(tmp_path: Path, kind: str, content: bytes) -> Path:
    path = tmp_path / f"reviews.{kind}"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("kind,workers", [("csv", 0), ("tsv", 0), ("jsonl", 0), ("csv", 1)],
                         ids=["csv", "tsv", "jsonl", "csv-dataloader-workers"])
def test_a_row_that_is_not_utf8_is_one_error_and_the_rest_is_stored(tmp_path: Path, minilm, kind: str,
                                                                     workers: int) -> None:
    table = _table(tmp_path, kind, TABLES[kind])
    with EmbeddingStore(tmp_path / "store") as store:
        summary = extract(MODEL, table, store, backbone=minilm, batch_size=2, workers=workers, progress=False)
        assert (summary.total, summary.computed, summary.failed) == (4, 3, 1)
        (error,) = store.errors(summary.fingerprint).values()
        data = load_dataset_vectors(store, summary.fingerprint, "reviews")
    assert "UTF-8" in error["reason"] and error["origin"] == f"{table.resolve()}:{BAD_LINE}"
    assert data.origins == [f"{table.resolve()}:{n}" for n in GOOD_LINES[kind]] and data.missing == 1


def test_the_cli_extract_exits_0_on_a_row_that_is_not_utf8(run_hubtune, tmp_path: Path) -> None:
    table = _table(tmp_path, "csv", TABLES["csv"])
    cache = str(tmp_path / "cache")
    summary = json.loads(run_hubtune("extract", MODEL, str(table), "--cache", cache, "--json", "--no-progress").stdout)
    assert (summary["total"], summary["computed"], summary["failed"]) == (4, 3, 1)
    (error,) = json.loads(run_hubtune("cache", "errors", "--cache", cache, "--dataset", "reviews", "--json").stdout)
    assert "UTF-8" in error["reason"] and error["origin"] == f"{table.resolve()}:{BAD_LINE}"


def test_a_bad_byte_in_the_label_fails_the_row_too(tmp_path: Path) -> None:
    """A row's annotations are part of it: a label that is not UTF-8 does not become a class."""
    table = _table(tmp_path, "csv", b"text,label\nfine text,n\xe9g\nother,pos\n")
    bad, good = open_dataset(table).items()
    assert bad.raw() == b"fine text,n\xe9g" and bad.label == "n\ufffdg"
    assert good.raw() == "other" and bad.key != good.key


@pytest.mark.parametrize("kind,content", [
    ("csv", b"text,label\nhello,a\nbye,b\n"),
    ("tsv", b"text\tlabel\nhello\ta\nbye\tb\n"),
    ("jsonl", b'{"text": "hello", "label": "a"}\n{"text": "bye", "label": "b"}\n'),
], ids=["csv", "tsv", "jsonl"])
def test_a_byte_order_mark_is_ignored(tmp_path: Path, kind: str, content: bytes) -> None:
    items = open_dataset(_table(tmp_path, kind, BOM + content)).items()
    assert [(item.raw(), item.label) for item in items] == [("hello", "a"), ("bye", "b")]


def test_csv_origins_are_the_lines_rows_start_on(tmp_path: Path) -> None:
    content = b'text,label\r\n"multi\r\nline",a\r\nplain,b\r\n\r\n"three\nline\nfield",c\nlast,d\n'
    table = _table(tmp_path, "csv", content)
    items = open_dataset(table).items()
    assert [item.origin for item in items] == [f"{table.resolve()}:{n}" for n in (2, 4, 6, 9)]
    assert [item.raw() for item in items] == ["multi\r\nline", "plain", "three\nline\nfield", "last"]


def test_jsonl_origins_are_line_numbers_and_bad_json_is_refused(tmp_path: Path) -> None:
    table = _table(tmp_path, "jsonl", b'{"text": "a"}\n\n{"text": "b"}\n')
    assert [item.origin for item in open_dataset(table).items()] == [f"{table.resolve()}:{n}" for n in (1, 3)]
    broken = _table(tmp_path, "jsonl", b'{"text": "a"}\nnot json \xe9\n')
    with pytest.raises(DatasetError, match=r"reviews\.jsonl:2: not valid JSON"):
        open_dataset(broken).items()
