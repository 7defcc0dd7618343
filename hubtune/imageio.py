"""Decoding image bytes safely: a decompression bomb is an error, never a warning."""

from __future__ import annotations

import io
import warnings
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Union

from hubtune.errors import ImageTooLarge, InputError

if TYPE_CHECKING:
    from PIL import Image

ImageInput = Union[bytes, "Image.Image"]

#: Pillow's own default limit; past it Pillow only warns, hubtune refuses.
MAX_IMAGE_PIXELS = 89_478_485


def to_rgb_image(item: ImageInput) -> "Image.Image":
    """Decode bytes (or take a PIL image) to a fully loaded RGB image."""
    from PIL import Image

    if isinstance(item, Image.Image):
        return item.convert("RGB")
    if not isinstance(item, (bytes, bytearray, memoryview)):
        raise InputError(f"expected image bytes or a PIL image, got {type(item).__name__}")
    with opened(item) as image:
        image.load()
        if image.mode.startswith("I;16"):  # Pillow would clip 16-bit values at 255: scale them
            image = image.point(lambda value: value / 257, "L")
        return image.convert("RGB")


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the header alone (nothing decoded); the same refusals as :func:`to_rgb_image`."""
    with opened(data) as image:
        return image.size


@contextmanager
def opened(data: "bytes | bytearray | memoryview") -> Iterator["Image.Image"]:
    """Pillow's image over ``data`` (its header read). An empty file, a decompression bomb
    (:class:`ImageTooLarge`), no image format or a broken file, here or in the ``with`` body, is an
    InputError saying which."""
    from PIL import Image

    if len(data) == 0:
        raise InputError("empty file (0 bytes)")
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                yield image
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"decompression bomb refused: {exc}") from exc
    except Image.UnidentifiedImageError as exc:  # its message names an in-memory buffer, not the file
        raise InputError(f"not an image: Pillow recognises no image format in its first bytes {bytes(data[:8])!r}") from exc
    except Exception as exc:  # Pillow raises many types for broken files
        raise InputError(f"not a readable image: {type(exc).__name__}: {exc}") from exc
