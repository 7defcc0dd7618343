"""Staged files: whole or absent, and with the mode ``open()`` gives a new file, not mkstemp's 0o600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from hubtune.atomic import atomic_write


@pytest.fixture(params=[0o022, 0o027])
def umask(request: pytest.FixtureRequest):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_staged_file_gets_the_mode_the_umask_gives(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "out" / "file.txt"
    atomic_write(path, lambda temporary: Path(temporary).write_text("x"))
    assert path.read_text() == "x" and mode(path) == 0o666 & ~umask
    assert os.listdir(path.parent) == ["file.txt"]


def test_also_when_the_writer_replaces_the_temporary_file(tmp_path: Path, umask: int) -> None:
    """safetensors' save_file writes its own 0o600 temporary file and renames it over the target."""
    from safetensors.numpy import save_file

    path = tmp_path / "head.safetensors"
    atomic_write(path, lambda temporary: save_file({"w": np.zeros(3, np.float32)}, temporary), durable=False)
    assert mode(path) == 0o666 & ~umask


def test_exports_and_indexes_are_readable_by_others(tmp_path: Path, umask: int) -> None:
    from hubtune import index as ix
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import export_dataset

    fingerprint, key = "ab" * 16, bytes(16)
    with EmbeddingStore(tmp_path / "cache") as store:
        store.register(fingerprint, {}, 4, "float16")
        store.put_batch(fingerprint, [key], np.ones((1, 4), np.float16))
        store.put_manifest("d", {"keys": [key.hex()], "labels": ["a"], "splits": ["train"], "origins": ["/x"]})
        export_dataset(store, fingerprint, "d", tmp_path / "export")
    spec = ix.choose_spec(1, 4)
    ix.save(ix.build(np.ones((1, 4), np.float32), spec), tmp_path / "i.faiss", spec, {"dataset": "d"})
    written = [tmp_path / "export" / "embeddings.npy", tmp_path / "export" / "items.jsonl",
               tmp_path / "i.faiss", tmp_path / "i.faiss.json"]
    assert {path.name: mode(path) for path in written} == {path.name: 0o666 & ~umask for path in written}


def test_saved_heads_are_readable_by_others(tmp_path: Path, umask: int) -> None:
    from hubtune.heads.training import train_head
    from hubtune.store.vectors import DatasetVectors

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)).astype(np.float32), ["a", "b"] * 10
    data = DatasetVectors(x, [f"{i:032x}" for i in range(20)], y, ["train"] * 16 + ["val"] * 4, [""] * 20, 0)
    folder = train_head(data, "knn", {"ref": "timm:x"}, k=3).save(tmp_path / "head")
    written = sorted(folder.iterdir())
    assert [path.name for path in written] == ["head.json", "head.safetensors"]  # no temporary left
    assert {mode(path) for path in written} == {0o666 & ~umask}
