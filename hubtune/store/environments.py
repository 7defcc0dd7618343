"""One LMDB environment per store and process, shared by its handles.

LMDB allows one environment per store in a process (py-lmdb refuses a second open), yet a process may
need several handles at once: ``hubtune serve``'s worker and writer threads, a notebook that embeds while
a service runs. :class:`~hubtune.store.EmbeddingStore` takes its environment from here: the open one, or
a new one; the last handle's close closes it. Call both under ``OPEN_LOCK``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubtune.errors import StoreError


@dataclass
class Shared:
    """One store's LMDB environment in this process, and how many handles use it."""

    env: Any
    readonly: bool
    users: int = 1


OPEN: dict[tuple[str, int], Shared] = {}  # (real path, pid) -> its environment
OPEN_LOCK = threading.Lock()


def _key(path: Path) -> tuple[str, int]:
    return os.path.realpath(path), os.getpid()


def open_env(path: Path, readonly: bool, map_size: int, max_readers: int) -> Any:
    """This process's environment for the store at ``path``: the open one (shared), or a new one."""
    import lmdb

    key = _key(path)
    shared = OPEN.get(key)
    if shared is not None:
        if shared.readonly and not readonly:
            raise StoreError(f"the store at {path} is open read-only in this process; close that handle "
                             "before opening it for writing")
        shared.users += 1
        return shared.env
    env = lmdb.open(str(path), map_size=map_size, max_dbs=12, readonly=readonly, sync=True,
                    writemap=False, metasync=True, lock=True, max_readers=max_readers)
    env.reader_check()  # clear reader slots left by killed processes
    OPEN[key] = Shared(env, readonly)
    return env


def release_env(path: Path, env: Any) -> None:
    """One handle fewer on ``env`` (hold ``OPEN_LOCK``); the last one closes it."""
    key = _key(path)
    shared = OPEN.get(key)
    if shared is None or shared.env is not env:
        env.close()
        return
    shared.users -= 1
    if shared.users == 0:
        del OPEN[key]
        env.close()


def forget_other_processes() -> None:
    """In a forked child: the parent's environments are not this process's (their handles close them)."""
    with OPEN_LOCK:
        for key in [key for key in OPEN if key[1] != os.getpid()]:
            del OPEN[key]
