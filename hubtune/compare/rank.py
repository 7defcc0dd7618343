"""Ranking compare's rows: the order (linear accuracy, then kNN), the Pareto front (accuracy vs
items/s) and the plot of it.

The accuracy on the front is the linear probe's, the first ranking key. A model is on the front
when no other model is at least as accurate and at least as fast, and better in one of the two.
A row with an error is never on it, and is ranked last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _score(row: dict[str, Any]) -> tuple[float, float]:
    def value(name: str) -> float:
        return -1.0 if row.get(name) is None else float(row[name])

    return value("linear_accuracy"), value("knn_accuracy")


def _on_front(row: dict[str, Any]) -> bool:
    return row.get("error") is None and row.get("linear_accuracy") is not None and row.get("items_per_s") is not None


def mark_pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set each row's ``pareto``: not dominated in (linear accuracy, items/s) by another row."""
    candidates = [row for row in rows if _on_front(row)]
    for row in rows:
        row["pareto"] = _on_front(row) and not any(
            other is not row
            and other["linear_accuracy"] >= row["linear_accuracy"] and other["items_per_s"] >= row["items_per_s"]
            and (other["linear_accuracy"] > row["linear_accuracy"] or other["items_per_s"] > row["items_per_s"])
            for other in candidates
        )
    return rows


def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows by linear accuracy, then kNN accuracy, best first (ties keep the order given); failed rows last."""
    return sorted(rows, key=lambda row: (row.get("error") is not None, tuple(-v for v in _score(row))))


def plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Linear accuracy against items/s, one labelled point per model that has both, the Pareto front
    drawn through the models on it (PNG, or any format matplotlib writes for ``path``'s suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [row for row in rows if _on_front(row)]
    front = sorted((row for row in points if row.get("pareto")), key=lambda row: row["items_per_s"])
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for row in points:
        axes.scatter(row["items_per_s"], row["linear_accuracy"], s=40, zorder=3,
                     color="tab:red" if row.get("pareto") else "tab:blue")
        axes.annotate(row["ref"], (row["items_per_s"], row["linear_accuracy"]), textcoords="offset points",
                      xytext=(5, 4), fontsize=8)
    if front:
        axes.plot([r["items_per_s"] for r in front], [r["linear_accuracy"] for r in front], color="tab:red",
                  drawstyle="steps-pre", alpha=0.7, label="Pareto front")
        axes.legend(loc="lower left")
    if points and min(r["items_per_s"] for r in points) > 0:
        axes.set_xscale("log")
    axes.set_xlabel("extraction items / s (this machine)")
    axes.set_ylabel("linear probe accuracy")
    axes.set_title("hubtune compare")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
