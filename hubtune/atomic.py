"""Files that appear whole or not at all: write beside the target, rename over it when complete.

A process killed mid-write leaves the previous file (or none) under the final name, never a
truncated one. ``durable=True`` also fsyncs the file and its folder, so the rename survives a power
cut; exports of data the cache can rebuild skip that and hand the bytes to the OS, as ``np.save`` does.

The file ends up with the mode ``open()`` would give a new file (``0o666`` less the umask), not the
``0o600`` of ``tempfile.mkstemp``: exports and indexes are outputs like any other file.
"""

from __future__ import annotations

import os
import secrets
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def staged(path: Path, durable: bool = True) -> Iterator[str]:
    """A temporary file beside ``path``, renamed over it when the block ends cleanly (removed if not)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary, mode = _create_beside(path)
    try:
        yield temporary
        os.chmod(temporary, mode)  # again: a writer may have replaced the file (safetensors writes 0o600)
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


def _create_beside(path: Path) -> tuple[str, int]:
    """A new empty file with a random name beside ``path``, and the mode the umask gave it.

    Created as ``open()`` creates files (``0o666``, the kernel applies the umask), which reads the
    umask without ``os.umask``'s set-and-restore, a race with other threads creating files.
    """
    while True:
        temporary = str(path.parent / f".{path.name}.{secrets.token_hex(6)}")
        try:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        try:
            return temporary, stat.S_IMODE(os.fstat(handle).st_mode)
        finally:
            os.close(handle)


def atomic_write(path: Path, write: Callable[[str], object], durable: bool = True) -> None:
    """Call ``write(temporary_path)``, then put the result at ``path`` as :func:`staged` does."""
    with staged(path, durable) as temporary:
        write(temporary)
