"""Text inputs: the one check every text preprocessor makes before tokenising."""

from __future__ import annotations

from typing import Any

from hubtune.errors import InputError


def as_text(item: Any) -> str:
    """``item`` as a string: UTF-8 bytes are decoded; anything else, undecodable bytes and
    whitespace-only text raise :class:`InputError` (recorded for the item, the run goes on)."""
    if isinstance(item, (bytes, bytearray)):
        try:
            item = bytes(item).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"text is not valid UTF-8: {exc}") from exc
    if not isinstance(item, str):
        raise InputError(f"expected text, got {type(item).__name__}")
    if not item.strip():
        raise InputError("empty text")
    return item
