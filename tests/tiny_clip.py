"""A tiny random CLIP repository (saved as the Hub's CLIP repositories are), seeded into the Hub cache:
shared by the two-tower tests and the whole-loop matrix."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

REPO = "hubtune-test/tiny-clip"
TEXT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def _clip_tokenizer() -> Any:
    """A byte-level BPE CLIP tokenizer (every byte, every byte + ``</w>``, a few merges), built offline."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {token: i for i, token in enumerate(chars + [c + "</w>" for c in chars])}
    merges = [("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("p", "h"), ("ph", "o")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def tiny_clip_repo(test_root: Path) -> str:
    """Saved as the Hub's CLIP repositories are: ``preprocessor_config.json`` + the tokenizer's files."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = test_root / "build" / "tiny-clip"
    tokenizer = _clip_tokenizer()
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(TEXT, vocab_size=len(tokenizer), max_position_embeddings=77,
                                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                                         pad_token_id=tokenizer.pad_token_id),
                        vision_config=dict(VISION, image_size=32, patch_size=8), projection_dim=16)
    model = CLIPModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    from hubtune.hfhub import seed_snapshot

    seed_snapshot(REPO, folder)
    return REPO
