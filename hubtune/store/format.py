"""The store's format: a new store is stamped with it, a store of another format is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hubtune.errors import StoreError
from hubtune.fingerprint import STORE_FORMAT_VERSION


def check_format(env: Any, path: Path, create: bool) -> None:
    """Stamp a new store with :data:`STORE_FORMAT_VERSION`; refuse one of another format.

    A store of another format holds vectors under fingerprints this hubtune never computes, so it
    is refused whole, with what to do, rather than read as if nothing were cached.
    """
    import lmdb

    try:
        meta = env.open_db(b"meta", create=False)
    except lmdb.NotFoundError:
        meta = None
    found = None
    if meta is not None:
        with env.begin() as txn:
            found = txn.get(b"format", db=meta)
    if found is not None:
        if found.decode() == str(STORE_FORMAT_VERSION):
            return
        found_name = found.decode()
    else:
        try:
            env.open_db(b"fingerprints", create=False)
        except lmdb.NotFoundError:  # a new store (or one whose stamping was cut short: nothing in it yet)
            if create:
                with env.begin(write=True) as txn:  # the table and its stamp in one transaction, never one alone
                    txn.put(b"format", str(STORE_FORMAT_VERSION).encode(),
                            db=env.open_db(b"meta", txn=txn, create=True))
            return
        found_name = "1 (before hubtune recorded store formats)"
    raise StoreError(
        f"the store at {path} has format {found_name}; this hubtune reads format {STORE_FORMAT_VERSION} "
        "(fingerprints now record the weights apart from the revision, so no vector in it would be found "
        f"again). Move it aside (`mv {path} {path}.old`) or delete it, then run `hubtune extract` again; "
        "the hubtune that wrote it still reads it"
    )
