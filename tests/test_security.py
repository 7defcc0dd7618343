"""Security by default: no remote code without a flag and a pinned revision, no unpickling."""

from __future__ import annotations

import fnmatch
import json
import pickle
import shutil
from pathlib import Path

import pytest

import hubtune
from hubtune.errors import BackboneOptionError, OfflineError, UnsafeModelError
from hubtune.hfhub import CODE_PATTERNS, SAFE_PATTERNS, cached_commit, repo_folder, seed_snapshot


class _Payload:
    """Unpickling this creates the canary file: proof that a pickle was loaded."""

    def __init__(self, canary: Path):
        self.canary = canary

    def __reduce__(self):
        return (open, (str(self.canary), "w"))


def _plant_pickle(path: Path, canary: Path) -> None:
    path.write_bytes(pickle.dumps(_Payload(canary)))


def _copy_snapshot(repo: str, dest: Path) -> Path:
    source = repo_folder(repo) / "snapshots" / cached_commit(repo)
    shutil.copytree(source, dest)
    return dest


def test_fetch_patterns_never_include_code_or_pickles() -> None:
    risky = ["modeling_evil.py", "pytorch_model.bin", "model.pt", "model.pth", "model.ckpt", "x.pkl", "tf_model.h5"]
    for name in risky:
        assert not any(fnmatch.fnmatch(name, pattern) for pattern in SAFE_PATTERNS), name
    assert any(fnmatch.fnmatch("modeling_evil.py", p) for p in CODE_PATTERNS)


def test_remote_code_is_refused_without_flag(tiny_bert_repo: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    folder = _copy_snapshot(tiny_bert_repo, tmp_path / "remote")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    seed_snapshot("hubtune-test/remote-code", folder)
    with pytest.raises(UnsafeModelError, match="--trust-remote-code"):
        hubtune.load_backbone("hf:hubtune-test/remote-code")
    with pytest.raises(UnsafeModelError, match="pinned revision"):
        hubtune.load_backbone("hf:hubtune-test/remote-code", trust_remote_code=True)
    assert not canary.exists()


def test_pickle_only_repository_is_refused(tiny_bert_repo: str, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    folder = _copy_snapshot(tiny_bert_repo, tmp_path / "pickled")
    (folder / "model.safetensors").unlink()
    _plant_pickle(folder / "pytorch_model.bin", canary)
    seed_snapshot("hubtune-test/pickled", folder)
    with pytest.raises(UnsafeModelError, match="no .safetensors weights"):
        hubtune.load_backbone("hf:hubtune-test/pickled")
    assert not canary.exists()


@pytest.mark.parametrize("suffix", [".bin", ".pt", ".pth", ".ckpt"])
def test_weights_path_must_be_safetensors(tmp_path: Path, suffix: str) -> None:
    canary = tmp_path / "canary"
    path = tmp_path / f"weights{suffix}"
    _plant_pickle(path, canary)
    with pytest.raises(BackboneOptionError, match="safetensors"):
        hubtune.load_backbone("timm:test_resnet", weights=str(path))
    assert not canary.exists()


def test_offline_uncached_repository_is_a_clear_error() -> None:
    with pytest.raises(OfflineError, match="offline mode is on"):
        hubtune.load_backbone("hf:hubtune-test/never-seeded", offline=True)


def test_mismatched_weights_file_names_the_keys(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file({"not_a_layer.weight": torch.zeros(2)}, str(path))
    with pytest.raises(BackboneOptionError, match="does not fit"):
        hubtune.load_backbone("timm:test_resnet", weights=str(path))
