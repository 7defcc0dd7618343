"""``hubtune demo``: the embedded default model, end to end, with no network.

Today it pulls the bundled MiniLM, shows what the backbone is, embeds a small set of sentences and
prints each one's nearest neighbour by cosine similarity. It grows with the toolkit (store, index,
heads) and always stays runnable offline on a laptop CPU.
"""

from __future__ import annotations

from typing import Any

from hubtune.constants import DEFAULT_MODEL

SENTENCES = [
    "The cat sat quietly on the warm windowsill.",
    "A kitten is napping in the sun by the window.",
    "Stock markets fell sharply after the interest rate decision.",
    "Shares dropped when the central bank raised rates.",
    "The recipe needs two cups of flour and a pinch of salt.",
    "Mix the flour with salt before adding the eggs.",
    "The striker scored twice in the second half.",
    "Their forward netted a brace after the break.",
]


def run_demo(offline: bool = True) -> dict[str, Any]:
    """Embed :data:`SENTENCES` with the default model; return the info and nearest neighbours."""
    import numpy as np

    from hubtune.api import load_backbone, pull

    pulled = pull(DEFAULT_MODEL, offline=offline)
    backbone = load_backbone(DEFAULT_MODEL, offline=offline)
    vectors = backbone.embed(SENTENCES)  # (N, 384), L2-normalised by the model's own config
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    neighbours = [
        {"text": text, "nearest": SENTENCES[int(similarity[i].argmax())], "cosine": round(float(similarity[i].max()), 4)}
        for i, text in enumerate(SENTENCES)
    ]
    pairs_found = sum(int(similarity[i].argmax()) == (i ^ 1) for i in range(len(SENTENCES)))
    return {
        "model": pulled.ref,
        "path": pulled.path,
        "dim": backbone.dim,
        "fingerprint": backbone.fingerprint(),
        "neighbours": neighbours,
        "paraphrase_pairs_found": f"{pairs_found}/{len(SENTENCES)}",
    }
