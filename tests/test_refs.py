"""The model-reference grammar: a table of accepted and rejected names."""

from __future__ import annotations

import pytest

from hubtune.errors import ModelRefError
from hubtune.refs import ModelRef, parse_ref

SHA = "0123456789abcdef0123456789abcdef01234567"

ACCEPTED = [
    ("hf:sentence-transformers/all-MiniLM-L6-v2", ModelRef("hf", "sentence-transformers/all-MiniLM-L6-v2")),
    (f"hf:google/vit-base-patch16-224@{SHA}", ModelRef("hf", "google/vit-base-patch16-224", SHA)),
    ("timm:resnet50.a1_in1k", ModelRef("timm", "resnet50.a1_in1k")),
    ("torchvision:resnet50@IMAGENET1K_V2", ModelRef("torchvision", "resnet50", "IMAGENET1K_V2")),
    ("timm:hf-hub:timm/resnet50.a1_in1k", ModelRef("timm", "hf-hub:timm/resnet50.a1_in1k")),
    ("hf-hub:timm/resnet50.a1_in1k", ModelRef(None, "hf-hub:timm/resnet50.a1_in1k")),
    ("org/name", ModelRef(None, "org/name")),
    ("resnet50", ModelRef(None, "resnet50")),
    ("hf:org/name@main", ModelRef("hf", "org/name", "main")),
    ("hf:org/name@refs/pr/1", ModelRef("hf", "org/name", "refs/pr/1")),
    ("hf:org/name@v1.0", ModelRef("hf", "org/name", "v1.0")),
    ("my_source:model_1", ModelRef("my_source", "model_1")),
    ("hf:" + "a" * 96 + "/" + "b" * 96, ModelRef("hf", "a" * 96 + "/" + "b" * 96)),
]

REJECTED = [
    ("", "empty"),
    ("hf:", "empty model id"),
    (":resnet50", "empty source"),
    ("hf:org/", "empty name"),
    ("hf:/name", "empty owner"),
    ("hf:org//name", "3 '/'-separated parts"),
    ("hf:org/name@", "empty revision"),
    ("hf:org/name@a@b", "more than one"),
    ("hf:../etc/passwd", "'/'-separated parts"),
    ("hf:../passwd", "may hold"),
    ("..", "local path"),
    ("hf:org/..", "may hold"),
    ("hf:org/na..me", "may hold"),
    ("hf:org/name@../../x", "revision"),
    ("hf:org/name@a//b", "revision"),
    ("/etc/passwd", "local path"),
    ("./model", "local path"),
    ("../model", "local path"),
    ("~/model", "local path"),
    (".hidden", "local path"),
    ("C:\\models\\x", "local path"),
    ("hf:org\\name", "local path"),
    ("file:///etc/passwd", "local path"),
    ("HF:org/name", "source"),
    ("my-source:model", "source"),
    ("hf:timm:x", "more than one 'source:'"),
    ("hf:org/name with space", "whitespace"),
    ("hf:org/name\n", "whitespace"),
    ("hf:org/na\x00me", "control"),
    ("hf:a/b/c", "3 '/'-separated parts"),
    ("hf:org/-name", "may hold"),
    ("hf:org/name-", "may hold"),
    ("hf:org/name.", "may hold"),
    ("hf:org--x/name", "may hold"),
    ("hf:org/nam€", "may hold"),
    ("hf:" + "a" * 97, "at most 96"),
    ("x" * 300, "at most 256"),
]


@pytest.mark.parametrize("text,expected", ACCEPTED, ids=[t for t, _ in ACCEPTED])
def test_accepted(text: str, expected: ModelRef) -> None:
    ref = parse_ref(text)
    assert ref == expected
    assert parse_ref(str(ref)) == ref  # round trip


@pytest.mark.parametrize("text,reason", REJECTED, ids=[repr(t)[:40] for t, _ in REJECTED])
def test_rejected(text: str, reason: str) -> None:
    with pytest.raises(ModelRefError) as info:
        parse_ref(text)
    message = str(info.value)
    assert reason in message
    assert "\n" not in message  # one-line errors


def test_pinned_revision() -> None:
    assert parse_ref(f"hf:org/name@{SHA}").pinned
    assert not parse_ref("hf:org/name@main").pinned
    assert not parse_ref("hf:org/name").pinned
