"""Fetching from the Hugging Face Hub safely: one place for snapshots, offline mode and file policy.

Used by every source whose weights live on the Hub (``hf`` and timm's ``hf-hub:`` weights). Only
files that cannot run code are fetched (configs, tokenizers, safetensors); ``.py`` files come only
when remote code was explicitly allowed, and pickled checkpoints (``.bin``, ``.pt``, ``.ckpt``)
never.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from hubtune.errors import ModelNotFoundError, OfflineError, UnsafeModelError
from hubtune.fingerprint import hash_file

SAFE_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja")
CODE_PATTERNS = ("*.py",)


def hub_cache_dir() -> Path:
    """The Hub cache in force (``HF_HUB_CACHE``, ``HF_HOME``/hub, or the default)."""
    import os

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str) -> Path:
    """Where the Hub cache keeps ``repo_id`` (``models--owner--name``)."""
    return hub_cache_dir() / ("models--" + repo_id.replace("/", "--"))


def cached_commit(repo_id: str, revision: str = "main") -> str | None:
    """The commit a cached branch points to, or None when the repository is not cached."""
    ref_file = repo_folder(repo_id) / "refs" / revision
    if ref_file.is_file():
        return ref_file.read_text().strip() or None
    return None


def snapshot(
    repo_id: str,
    revision: str | None,
    *,
    offline: bool,
    allow_patterns: Sequence[str] = SAFE_PATTERNS,
    asked: str | None = None,
    instead: str = "",
) -> tuple[Path, str]:
    """Download (or, offline, find) a repository snapshot; return ``(folder, commit sha)``.

    ``asked``: the reference as the user gave it, for the ``hubtune pull`` the offline error suggests
    (default ``hf:<repo>@<revision>``); ``instead``: another way out that error can offer.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=list(allow_patterns),
            local_files_only=offline,
            cache_dir=str(hub_cache_dir()),
        )
    except GatedRepoError as exc:
        raise ModelNotFoundError(f"{where} is gated on the Hub: accept its terms and log in (hf auth login)") from exc
    except RevisionNotFoundError as exc:
        raise ModelNotFoundError(f"{where}: the Hub repository has no such revision") from exc
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(f"{where}: no such repository on the Hub (or it is private)") from exc
    except LocalEntryNotFoundError as exc:
        if offline:
            raise OfflineError(
                f"{where} is not in the local hub cache ({hub_cache_dir()}) and offline mode is on; "
                f"fetch it once with network (`hubtune pull {asked or 'hf:' + where.removesuffix('@main')}`) or unset "
                f"HF_HUB_OFFLINE{instead}"
            ) from exc
        raise OfflineError(
            f"{where} could not be fetched (the Hub is unreachable) and is not in the local cache "
            f"({hub_cache_dir()}): {exc}"
        ) from exc
    return Path(folder), Path(folder).name


def require_safetensors(folder: Path, what: str) -> list[Path]:
    """The snapshot's safetensors files; refuse a repository that only has pickled weights."""
    found = sorted(folder.rglob("*.safetensors"))
    if not found:
        raise UnsafeModelError(
            f"{what} has no .safetensors weights; hubtune does not unpickle .bin/.pt checkpoints. "
            "Convert them to safetensors, or load a converted file with --weights PATH."
        )
    return found


def content_commit(folder: Path) -> str:
    """A 40-hex name for a folder's exact bytes (sha1 over sorted relative paths and contents)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        hash_file(path, digest)
    return digest.hexdigest()


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def seed_snapshot(repo_id: str, folder: Path, commit: str | None = None, branch: str = "main") -> str:
    """Place a folder of repository files in the Hub cache as a snapshot, and point ``branch`` at it.

    Afterwards every Hub client finds ``repo_id`` offline through its ordinary cache code. Used for
    the embedded default model and for tiny models built in tests. ``commit`` defaults to
    :func:`content_commit`. Writes are atomic (staging folder + rename), so racing seeders are safe.
    """
    commit = commit or content_commit(folder)
    repo = repo_folder(repo_id)
    target = repo / "snapshots" / commit
    if not target.is_dir():
        (repo / "snapshots").mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".seed-", dir=repo / "snapshots"))
        for path in folder.rglob("*"):
            if path.is_file():
                dst = staging / path.relative_to(folder)
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(path, dst)
        try:
            os.replace(staging, target)
        except OSError:  # another process won the race
            shutil.rmtree(staging, ignore_errors=True)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    ref_tmp = repo / "refs" / f".{branch}-{os.getpid()}"
    ref_tmp.write_text(commit)
    os.replace(ref_tmp, repo / "refs" / branch)
    return commit
