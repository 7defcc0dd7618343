"""The ``hf`` source: resolves a repository to a pinned snapshot and picks the text or vision adapter."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Iterable

from hubtune.hfhub import CODE_PATTERNS, SAFE_PATTERNS, cached_commit, hub_cache_dir, repo_folder, snapshot
from hubtune.refs import ModelRef
from hubtune.plugin import (
    Backbone, LoadOptions, ModelInfo, ModelNotFoundError, ModelRefError, PullResult, Source, UnsafeModelError,
)
from hubtune_hf.embedded import EMBEDDED_REPO, embedded_files, ensure_seeded
from hubtune_hf.multimodal import TWO_TOWERS, is_two_tower

IMAGE_MARKERS = ("preprocessor_config.json",)
TEXT_MARKERS = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model")


def modality_of(folder: Path) -> str:
    """``image+text`` for a text-image model (CLIP, SigLIP: ``multimodal.is_two_tower``), else ``image``
    when the snapshot has an image processor config, ``text`` when it has a tokenizer."""
    if is_two_tower(folder):
        return TWO_TOWERS
    if any((folder / name).is_file() for name in IMAGE_MARKERS):
        return "image"
    if any((folder / name).is_file() for name in TEXT_MARKERS):
        return "text"
    raise ModelNotFoundError(
        f"{folder.name}: the repository has neither an image processor nor a tokenizer; "
        "hubtune's hf source embeds text and image models"
    )


def _needs_remote_code(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    return "auto_map" in json.loads(config.read_text())


class HFSource(Source):
    name = "hf"
    modalities = ("text", "image")

    def claims(self, name: str) -> bool:
        # Hub ids without an owner are legacy; claim one only when it is already cached locally.
        return cached_commit(name) is not None

    def list_models(self, pattern: str | None = None) -> Iterable[ModelInfo]:
        repos: set[str] = set()
        cache = hub_cache_dir()
        if cache.is_dir():
            repos.update(p.name[len("models--"):].replace("--", "/") for p in cache.glob("models--*"))
        if embedded_files() is not None:
            repos.add(EMBEDDED_REPO)
        for repo in sorted(repos):
            if pattern and not fnmatch.fnmatch(repo, pattern):
                continue
            commit = cached_commit(repo)
            folder = cache / ("models--" + repo.replace("/", "--")) / "snapshots" / (commit or "")
            try:
                modality = modality_of(folder) if commit else "text"
            except ModelNotFoundError:
                continue
            yield ModelInfo(ref=f"hf:{repo}", source=self.name, modality=modality)

    def modality(self, ref: ModelRef) -> str | None:
        """As :meth:`load` decides it (:func:`modality_of`), from the snapshot already in the local cache (or
        the embedded model's shipped files); None when that revision is not here (only a download would tell)."""
        if ref.id.startswith("hf-hub:"):
            return None
        commit = ref.revision if ref.pinned else cached_commit(ref.id, ref.revision or "main")
        folder = repo_folder(ref.id) / "snapshots" / (commit or "")
        if commit is None or not folder.is_dir():
            shipped = embedded_files() if ref.id == EMBEDDED_REPO and ref.revision is None else None
            if shipped is None:
                return None
            folder = shipped
        try:
            return modality_of(folder)
        except ModelNotFoundError:
            return None

    def resolve(self, ref: ModelRef, options: LoadOptions) -> tuple[Path, str]:
        """Pinned snapshot folder and commit for ``ref``, enforcing the code and pickle policy."""
        if ref.id.startswith("hf-hub:"):
            raise ModelRefError(f"{ref}: 'hf-hub:' ids are timm's; use timm:{ref.id}")
        offline = options.offline
        if ref.id == EMBEDDED_REPO and ref.revision is None and ensure_seeded() is not None:
            offline = True  # the embedded copy is complete: no reason to touch the network
        patterns = SAFE_PATTERNS
        if options.trust_remote_code:
            if not ref.pinned:
                raise UnsafeModelError(
                    f"--trust-remote-code needs a pinned revision: use hf:{ref.id}@<40-hex commit sha>"
                )
            patterns = SAFE_PATTERNS + CODE_PATTERNS
        folder, commit = snapshot(ref.id, ref.revision, offline=offline, allow_patterns=patterns)
        if _needs_remote_code(folder) and not options.trust_remote_code:
            raise UnsafeModelError(
                f"hf:{ref.id} asks to run its own Python code (auto_map in config.json); hubtune "
                "refuses unless you pass --trust-remote-code and pin the revision "
                f"(hf:{ref.id}@<40-hex commit sha>) after reading that code"
            )
        return folder, commit

    def pull(self, ref: ModelRef, options: LoadOptions) -> PullResult:
        folder, commit = self.resolve(ref, options)
        return PullResult(ref=f"hf:{ref.id}@{commit}", revision=commit, path=str(folder))

    def load(self, ref: ModelRef, options: LoadOptions) -> Backbone:
        folder, commit = self.resolve(ref, options)
        pinned = ModelRef(self.name, ref.id, commit)
        modality = modality_of(folder)
        if modality == TWO_TOWERS:
            from hubtune_hf.multimodal import build_two_tower_backbone

            return build_two_tower_backbone(pinned, folder, options)
        if modality == "image":
            from hubtune_hf.vision import build_vision_backbone

            return build_vision_backbone(pinned, folder, options)
        from hubtune_hf.text import build_text_backbone

        return build_text_backbone(pinned, folder, options)
