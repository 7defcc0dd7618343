"""A dataset item as the page shows it: its text, or a thumbnail of its image.

The item is found by its row among the dataset's vectors (the ``row`` a search hit carries), and read
from the origin the store's manifest recorded for it (an absolute file path, or ``FILE:LINE`` of a
table): never from a path the client gives. What is read must still hash to the recorded content
key, so a file changed since extraction is refused (404) rather than shown as the item.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubtune.errors import NotFoundError


@dataclass
class Item:
    row: int
    key: str
    label: str | None
    origin: str
    text: str | None = None  # a text item
    image: bytes | None = None  # an image item: its thumbnail
    media_type: str = "application/json"


def _table_rows(table: Path) -> dict[str, Any]:
    """A table's items by origin (``FILE:LINE``), read with the dataset reader ``extract`` used."""
    from hubtune.data import open_dataset

    return {item.origin: item for item in open_dataset(table)}


def thumbnail(data: bytes, size: int) -> tuple[bytes, str]:
    """A JPEG at most ``size`` px on its longer side (decoded as the extractor decodes: bombs refused)."""
    from hubtune.imageio import to_rgb_image

    image = to_rgb_image(data)  # refuses a decompression bomb
    image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue(), "image/jpeg"


class Items:
    """Reads items of the served datasets; tables are parsed once, thumbnails kept (a few hundred)."""

    def __init__(self, thumbnail_px: int = 256, keep: int = 512):
        self.thumbnail_px = thumbnail_px
        self.keep = keep
        self.tables: dict[str, dict[str, Any]] = {}
        self.thumbnails: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, dataset: Any, row: int) -> Item:
        """Item ``row`` of ``dataset`` (a :class:`hubtune.serve.service.Searchable`)."""
        data = dataset.found.data
        if not 0 <= row < len(data.keys):
            raise NotFoundError(f"dataset {dataset.name!r} has rows 0..{len(data.keys) - 1}; no row {row}")
        key, origin = data.keys[row], data.origins[row]
        found = Item(row, key, data.labels[row], origin)
        source = self.source(origin)
        if isinstance(source, str):
            found.text = source
        else:
            path = Path(source.path)  # type: ignore[union-attr]
            if source.text is not None:  # type: ignore[union-attr]
                found.text = source.text  # type: ignore[union-attr]
            elif path.suffix.lower() in (".txt",):
                found.text = self.read(path, key).decode("utf-8", errors="replace")
            else:
                found.image, found.media_type = self.image(path, key)
        if found.text is not None:
            from hubtune.data.items import text_key

            if text_key(found.text).hex() != key:
                raise NotFoundError(f"item {row} of {dataset.name!r} ({origin}) changed since it was extracted")
        return found

    def source(self, origin: str) -> Any:
        """What ``origin`` names: a file item (an object with ``path``/``text``), or a table row's item."""
        from types import SimpleNamespace

        from hubtune.data import TABLE_SUFFIXES

        file, sep, line = origin.rpartition(":")
        if sep and line.isdigit() and Path(file).suffix.lower() in TABLE_SUFFIXES:
            with self.lock:
                if file not in self.tables:
                    if not Path(file).is_file():
                        raise NotFoundError(f"{file}: the table the item came from is gone")
                    self.tables[file] = _table_rows(Path(file))
                rows = self.tables[file]
            if origin not in rows:
                raise NotFoundError(f"{origin}: the table no longer has that row")
            item = rows[origin]
            return item.text if item.text is not None else SimpleNamespace(path=item.path, text=None)
        return SimpleNamespace(path=origin, text=None)

    @staticmethod
    def read(path: Path, key: str) -> bytes:
        from hubtune.data import content_key

        try:
            data = path.read_bytes()
        except OSError:
            raise NotFoundError(f"{path}: the item's file is gone") from None
        if content_key(data).hex() != key:
            raise NotFoundError(f"{path} changed since it was extracted (its content key is no longer {key})")
        return data

    def image(self, path: Path, key: str) -> tuple[bytes, str]:
        cached = self.thumbnails.get((key, str(path)))
        if cached is not None:
            return cached, "image/jpeg"
        made, media_type = thumbnail(self.read(path, key), self.thumbnail_px)
        with self.lock:
            self.thumbnails[(key, str(path))] = made
            while len(self.thumbnails) > self.keep:
                self.thumbnails.popitem(last=False)
        return made, media_type
