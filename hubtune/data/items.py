"""Items: one input each, with its content key (blake2b-128 of its raw bytes; UTF-8 for text), a
label, a split and an origin (the absolute file path, or ``FILE:LINE`` for a table row). The key is
what the store indexes, so the same image under two paths, or in two datasets, is embedded once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from hubtune.fingerprint import hash_file


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


def text_key(text: str) -> bytes:
    """A text's key: the key of its UTF-8 bytes."""
    return content_key(text.encode("utf-8", errors="surrogatepass"))


def file_key(path: Path) -> bytes:
    """A file's key, hashed as it streams (never read whole)."""
    return hash_file(path, hashlib.blake2b(digest_size=16)).digest()
