"""Files that appear whole or not at all: write beside the target, rename over it when complete.

A process killed mid-write leaves the previous file (or none) under the final name, never a
truncated one. ``durable=True`` also fsyncs the file and its folder, so the rename survives a power
cut; exports of data the cache can rebuild skip that and hand the bytes to the OS, as ``np.save`` does.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def staged(path: Path, durable: bool = True) -> Iterator[str]:
    """A temporary file beside ``path``, renamed over it when the block ends cleanly (removed if not)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        yield temporary
        if durable:
            with open(temporary, "rb+") as stream:
                os.fsync(stream.fileno())
        os.replace(temporary, path)
        if durable:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def atomic_write(path: Path, write: Callable[[str], object], durable: bool = True) -> None:
    """Call ``write(temporary_path)``, then put the result at ``path`` as :func:`staged` does."""
    with staged(path, durable) as temporary:
        write(temporary)
