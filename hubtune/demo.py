"""``hubtune demo``: the whole transfer-learning job on the embedded default model, offline.

1. pull the bundled ``sentence-transformers/all-MiniLM-L6-v2``;
2. build a real labelled dataset: the AFINN-165 sentiment word list (``afinn`` package), each word
   labelled by the sign of its valence, split 70 / 10 / 20 (train / val / test) with a fixed seed;
3. extract it into the store, build its FAISS index, train ``linear`` and ``knn`` heads;
4. report test accuracy next to the majority-class baseline and the nearest neighbours of a few
   words, and write a report folder: a confusion-matrix PNG, a 2-D map of the embeddings coloured
   by class, and the metrics as JSON.

AFINN-165 holds profanity and slurs. The query words are chosen for clean neighbours, and any
neighbour in :data:`BLOCKED` is left out of what is shown; the dataset, the heads and their
accuracy are untouched.

Every step is deterministic, so the numbers repeat run to run on the same machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hubtune.constants import DEFAULT_MODEL, hubtune_home

QUERIES = ["excellent", "terrible", "happy", "disaster"]
SHOWN = 5  # neighbours shown per query word, besides the word itself
# Profanity, slurs and vulgar insults among AFINN-165's entries. A neighbour is not shown when it is one
# of these or contains one as a word ("fucking good"); only the printed neighbours are filtered.
BLOCKED = frozenset("""
    apeshit arsehole ass assfucking asshole badass bastard bastards bitch bitches bullshit cock
    cocksucker cocksuckers crap crappy cunt damn damned damnit dick dickhead dipshit douche douchebag
    dumbass fag faggot faggots fuck fucked fucker fuckers fuckface fuckhead fuckin fucking fucktard
    fuked fuking goddamn jackass jackasses lmfao motherfucker motherfucking niggas nigger piss pissed
    pissing prick retard retarded rotflmfao scumbag shit shithead shitty slut son-of-a-bitch tard tits
    twat wanker whore wtf wtff wtfff
""".split())
SPLITS = (("train", 0.7), ("val", 0.1), ("test", 0.2))  # the last one takes the remainder


def afinn_table(folder: Path) -> Path:
    """AFINN-165 as a ``.jsonl`` dataset (text, label, split), written once, deterministic."""
    import afinn
    import numpy as np

    source = Path(afinn.__file__).parent / "data" / "AFINN-en-165.txt"
    words = []
    for line in source.read_text(encoding="utf-8").splitlines():
        word, _, score = line.rpartition("\t")
        if word and int(score) != 0:
            words.append((word, "positive" if int(score) > 0 else "negative"))
    order = np.random.default_rng(0).permutation(len(words))
    split_of: dict[int, str] = {}
    start = 0
    for name, share in SPLITS:
        stop = len(words) if name == SPLITS[-1][0] else start + int(round(share * len(words)))
        split_of.update({int(i): name for i in order[start:stop]})
        start = stop
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "afinn-165.jsonl"
    lines = "".join(json.dumps({"text": w, "label": l, "split": split_of[i]}) + "\n" for i, (w, l) in enumerate(words))
    if not table.is_file() or table.read_text(encoding="utf-8") != lines:
        table.write_text(lines, encoding="utf-8")
    return table


def is_blocked(entry: str) -> bool:
    """Whether an AFINN entry is, or contains as a word, one of :data:`BLOCKED`."""
    entry = entry.lower()
    return entry in BLOCKED or any(word in BLOCKED for word in entry.split())


def _confusion_png(matrix: list[list[int]], classes: list[str], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.2, 3.6), dpi=120)
    image = axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title, fontsize=9)
    for row, values in enumerate(matrix):
        for column, value in enumerate(values):
            axes.text(column, row, str(value), ha="center", va="center",
                      color="white" if value > max(map(max, matrix)) / 2 else "black")
    figure.colorbar(image)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _map_png(vectors: Any, labels: list[str], path: Path) -> None:
    """First two principal components, coloured by class (deterministic: signs fixed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    centred = vectors - vectors.mean(0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2] * np.sign(components[:2, :1] + 1e-12)
    points = centred @ components.T
    figure, axes = plt.subplots(figsize=(5, 4.2), dpi=120)
    for label, colour in zip(sorted(set(labels)), ("tab:red", "tab:green", "tab:blue", "tab:orange")):
        mask = np.array([l == label for l in labels])
        axes.scatter(points[mask, 0], points[mask, 1], s=4, alpha=0.6, c=colour, label=label)
    axes.set_title("AFINN-165 words, MiniLM embeddings (PCA)", fontsize=9)
    axes.legend(markerscale=3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def run_demo(cache: Path | None = None, report: Path | None = None, offline: bool = True) -> dict[str, Any]:
    import numpy as np

    from hubtune.api import load_backbone, pull
    from hubtune.backbone import LoadOptions
    from hubtune.extract import extract
    from hubtune.heads.features import metrics
    from hubtune.heads.training import train_head
    from hubtune.index.neighbours import ensure_index, search_dataset
    from hubtune.store import EmbeddingStore
    from hubtune.store.vectors import load_dataset_vectors

    started = time.perf_counter()
    home = hubtune_home() / "demo"
    cache = cache or home / "cache"
    report = report or home / "report"
    report.mkdir(parents=True, exist_ok=True)
    options = LoadOptions(offline=offline, precision="fp32")
    pulled = pull(DEFAULT_MODEL, options)
    backbone = load_backbone(DEFAULT_MODEL, options)
    table = afinn_table(home)
    with EmbeddingStore(cache) as store:
        summary = extract(DEFAULT_MODEL, table, store, dataset_name="afinn-165", backbone=backbone, progress=False)
        data = load_dataset_vectors(store, summary.fingerprint, "afinn-165")
        found = ensure_index(store, summary.fingerprint, "afinn-165")
    test = [i for i, split in enumerate(data.splits) if split == "test"]
    classes = sorted(set(data.labels))
    y_test = np.array([classes.index(data.labels[i]) for i in test])
    model = {"ref": DEFAULT_MODEL, "fingerprint": summary.fingerprint, "options": {"precision": "fp32"}}
    results: dict[str, Any] = {}
    for kind in ("linear", "knn"):
        head = train_head(data, kind, model)
        head.save(report / f"head-{kind}")
        results[kind] = metrics(head.probabilities(data.vectors[test]), y_test, head.classes)
        results[kind]["val_accuracy"] = head.metrics["val"]["accuracy"]
    majority = float(np.bincount(y_test).max() / len(y_test))
    neighbours = search_dataset(found, backbone.embed(QUERIES), 4 * SHOWN)
    lines = table.read_text(encoding="utf-8").splitlines()

    def word(origin: str) -> str:  # origins are FILE:LINE
        return json.loads(lines[int(origin.rsplit(":", 1)[1]) - 1])["text"]

    def shown(query: str, hits: list[dict[str, Any]]) -> list[str]:  # the query first, then clean neighbours
        nearest = [word(hit["item"]) for hit in hits]
        return [query] + [w for w in nearest if w != query and not is_blocked(w)][:SHOWN]

    words = {query: shown(query, hits) for query, hits in zip(QUERIES, neighbours)}
    _confusion_png(results["linear"]["confusion_matrix"], classes, "linear probe, test split", report / "confusion_linear.png")
    _map_png(data.vectors, data.labels, report / "embedding_map.png")
    outcome = {
        "model": pulled.ref,
        "dataset": {"name": "afinn-165", "items": summary.total, "test": len(test), "classes": classes},
        "extract": summary.as_dict(),
        "index": {"kind": found.spec.kind, "rows": int(found.index.ntotal)},
        "majority_baseline": majority,
        "linear": {k: results["linear"][k] for k in ("accuracy", "balanced_accuracy", "val_accuracy")},
        "knn": {k: results["knn"][k] for k in ("accuracy", "balanced_accuracy", "val_accuracy")},
        "neighbours": words,
        "report": str(report),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (report / "metrics.json").write_text(json.dumps({**outcome, "details": results}, indent=2))
    return outcome
