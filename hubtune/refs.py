"""Model references: ``[source:]id[@revision]``.

Examples: ``hf:sentence-transformers/all-MiniLM-L6-v2``, ``hf:google/vit-base-patch16-224@<sha>``,
``timm:resnet50.a1_in1k``, ``timm:hf-hub:timm/resnet50.a1_in1k``, ``torchvision:resnet50@IMAGENET1K_V2``.

Parsing is purely syntactic and strict: every part is checked against a whitelist of characters,
so a reference can never name a file outside the hub caches (no ``..``, no absolute or home paths,
no backslashes). Local weights are asked for explicitly with ``--weights PATH``; a hub id never falls
through to a local path. Which source serves a reference without a prefix is decided in
:mod:`hubtune.registry`, where the installed sources are known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from hubtune.errors import ModelRefError, option

MAX_REF_LENGTH = 256
MAX_PART_LENGTH = 96  # the Hugging Face Hub's limit for an owner or repository name
MAX_REVISION_LENGTH = 128

SOURCE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")  # a source's name: the prefix of its references
_PART = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?")
_REVISION = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._/-]*[A-Za-z0-9_])?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
#: the source a bare ``owner/name`` goes to (the reference grammar: Hub ids are the Hugging Face Hub's)
HUB_SOURCE = "hf"
HF_HUB_PREFIX = "hf-hub:"  # timm's own prefix for weights hosted on the Hugging Face Hub


@dataclass(frozen=True)
class ModelRef:
    """A parsed model reference. ``source`` is None until resolved against the installed sources."""

    source: str | None
    id: str
    revision: str | None = None

    def __str__(self) -> str:
        text = f"{self.source}:{self.id}" if self.source else self.id
        return f"{text}@{self.revision}" if self.revision else text

    def with_source(self, source: str) -> "ModelRef":
        return replace(self, source=source)

    @property
    def pinned(self) -> bool:
        """True when the revision is a full 40-hex commit hash (required for remote code)."""
        return bool(self.revision and _COMMIT.fullmatch(self.revision))


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith(("/", "./", "../", "~", "."))
        or "\\" in text
        or re.match(r"^[A-Za-z]:[\\/]", text) is not None
        or text.startswith("file:")
    )


def _check_part(part: str, what: str, text: str) -> None:
    if not part:
        raise ModelRefError(f"model reference {text!r} has an empty {what}")
    if len(part) > MAX_PART_LENGTH:
        raise ModelRefError(
            f"model reference {text!r}: {what} is {len(part)} characters, at most {MAX_PART_LENGTH}"
        )
    if ".." in part or "--" in part or not _PART.fullmatch(part):
        raise ModelRefError(
            f"model reference {text!r}: {what} {part!r} may hold letters, digits, '.', '_' and '-' "
            "(not '..' or '--'), starting with a letter or digit"
        )


def parse_ref(text: str) -> ModelRef:
    """Parse ``[source:]id[@revision]`` strictly; raise :class:`ModelRefError` with the fix."""
    if not isinstance(text, str) or not text:
        raise ModelRefError("empty model reference; expected [source:]id[@revision], e.g. timm:resnet50")
    if len(text) > MAX_REF_LENGTH:
        raise ModelRefError(f"model reference is {len(text)} characters long, at most {MAX_REF_LENGTH}")
    if any(ch.isspace() or not ch.isprintable() for ch in text):
        raise ModelRefError(f"model reference {text!r} contains whitespace or control characters")
    if _looks_like_path(text):
        raise ModelRefError(
            f"{text!r} looks like a local path; model references name hub models only. "
            f"Load local weights with {option('weights', 'PATH')} (a safetensors file) on a hub architecture."
        )
    body, at, revision = text.partition("@")
    if at:
        if "@" in revision:
            raise ModelRefError(f"model reference {text!r} has more than one '@revision'")
        if not revision:
            raise ModelRefError(f"model reference {text!r} has an empty revision after '@'")
        if (
            len(revision) > MAX_REVISION_LENGTH
            or ".." in revision
            or "//" in revision
            or not _REVISION.fullmatch(revision)
        ):
            raise ModelRefError(
                f"model reference {text!r}: revision {revision!r} is not a branch, tag, commit "
                "or weights name (letters, digits, '.', '_', '-', '/'; no '..')"
            )
    source = None
    head, colon, rest = body.partition(":")
    if colon and body.startswith(HF_HUB_PREFIX):
        rest = body  # a bare timm 'hf-hub:org/name': no source prefix
    elif colon:
        if not head:
            raise ModelRefError(f"model reference {text!r} has an empty source before ':'")
        if not SOURCE_NAME.fullmatch(head):
            raise ModelRefError(
                f"model reference {text!r}: source {head!r} must be lower-case letters, digits "
                "and '_', e.g. hf, timm, torchvision"
            )
        source = head
    else:
        rest = body
    model_id = rest
    inner = model_id[len(HF_HUB_PREFIX):] if model_id.startswith(HF_HUB_PREFIX) else model_id
    if ":" in inner:
        raise ModelRefError(f"model reference {text!r} has more than one 'source:' prefix")
    if not inner:
        raise ModelRefError(f"model reference {text!r} has an empty model id")
    parts = inner.split("/")
    if len(parts) > 2:
        raise ModelRefError(
            f"model reference {text!r}: the id has {len(parts)} '/'-separated parts, at most 2 (owner/name)"
        )
    for index, part in enumerate(parts):
        _check_part(part, "owner" if index == 0 and len(parts) == 2 else "name", text)
    return ModelRef(source=source, id=model_id, revision=revision or None)
