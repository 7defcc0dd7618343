"""Ranking compare's rows: the order (linear accuracy, then kNN), the Pareto front (accuracy vs
items/s) and the plot of it.

The accuracy on the front is the linear probe's, the first ranking key. A model is on the front
when no other model is at least as accurate and at least as fast, and better in one of the two.
A row with an error is never on it, and is ranked last.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hubtune.errors import PlotError

#: the suffixes ``plot`` writes (matplotlib's Agg formats, less those that need LaTeX or are raw buffers)
PLOT_FORMATS = ("png", "pdf", "svg", "svgz", "jpg", "jpeg", "webp", "gif", "tif", "tiff", "eps", "ps")


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


def plottable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows the plot draws: those with a linear accuracy and an items/s (not the failed ones)."""
    return [row for row in rows if _on_front(row)]


def check_plot_path(path: str | Path) -> Path:
    """``path`` if a plot can be written there, checked before any work: a suffix in :data:`PLOT_FORMATS`,
    not a folder, its folder made (as ``train --out`` and ``export --out`` make theirs) and writable."""
    path = Path(path)
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in PLOT_FORMATS:
        found = f"ends in .{suffix}" if suffix else "has no suffix"
        raise PlotError(f"plot file {path} {found}; give a file ending in .png (or .{', .'.join(PLOT_FORMATS[1:])})")
    if path.is_dir():
        raise PlotError(f"plot file {path} is a folder; give a file name ending in .{suffix}")
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        above = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        why = f"{above} is a file, not a folder" if above is not None else exc.strerror or str(exc)
        raise PlotError(f"cannot create the folder of the plot file {path}: {why}") from None
    blocked = path if path.exists() and not os.access(path, os.W_OK) else \
        folder if not os.access(folder, os.W_OK | os.X_OK) else None
    if blocked is not None:
        raise PlotError(f"cannot write the plot file {path}: {blocked} is not writable")
    return path


def plot(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Linear accuracy against items/s, one labelled point per model that has both, the Pareto front
    drawn through the models on it; PNG, or the format of ``path``'s suffix (:data:`PLOT_FORMATS`).

    Raises :class:`~hubtune.errors.PlotError` for a path that cannot be written (checked first: see
    :func:`check_plot_path`) and when no row has a point (every model failed): no file is written then."""
    path = check_plot_path(path)
    points = plottable(rows)
    if not points:
        raise PlotError(f"no plot written to {path}: no model has a linear accuracy and an items/s to draw "
                        f"(all {len(rows)} failed)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = sorted((row for row in points if row.get("pareto")), key=lambda row: row["items_per_s"])
    figure, axes = plt.subplots(figsize=(7, 4.5))
    try:
        others = [row for row in points if not row.get("pareto")]
        for group, color, label in ((front, "tab:red", "Pareto front"), (others, "tab:blue", "dominated")):
            if group:  # unclipped: a point at accuracy 1.0 sits whole on the top edge
                axes.scatter([r["items_per_s"] for r in group], [r["linear_accuracy"] for r in group], s=40, zorder=3,
                             clip_on=False, color=color, label=label)
        if front:
            axes.plot([r["items_per_s"] for r in front], [r["linear_accuracy"] for r in front], color="tab:red",
                      drawstyle="steps-pre", alpha=0.7)
        if min(r["items_per_s"] for r in points) > 0:
            from matplotlib.ticker import LogFormatter

            axes.set_xscale("log")
            for formatter in (axes.xaxis.set_major_formatter, axes.xaxis.set_minor_formatter):
                formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1, 0.5)))  # 30, 40, not 3x10^1
        axes.margins(x=0.08)
        accuracies = [r["linear_accuracy"] for r in points]
        pad = max(0.1 * (max(accuracies) - min(accuracies)), 0.05)
        axes.set_ylim(max(0.0, min(accuracies) - pad), min(1.0, max(accuracies) + pad))  # never above 1
        axes.autoscale_view()
        _label(axes, points)
        axes.legend(loc="best", fontsize=8)  # where it covers the fewest points and lines
        axes.set_xlabel("extraction items / s (this machine)")
        axes.set_ylabel("linear probe accuracy")
        axes.set_title("hubtune compare")
        axes.grid(True, alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    except OSError as exc:
        raise PlotError(f"cannot write the plot file {path}: {exc.strerror or exc}") from None
    finally:
        plt.close(figure)
    return path


def _label(axes: Any, points: list[dict[str, Any]]) -> None:
    """Each point's model name beside it, inside the axes: to the right of a point in the left third,
    to the left of one in the right third, centred over one in the middle; above the point, or below
    one in the top fifth (the title sits above), moved further off the point, then to its other side,
    while it would cover a label already placed."""
    renderer = axes.figure.canvas.get_renderer()
    to_axes = axes.transAxes.inverted()
    placed: list[Any] = []
    for row in sorted(points, key=lambda r: (r["items_per_s"], r["linear_accuracy"])):
        xy = (row["items_per_s"], row["linear_accuracy"])
        fx, fy = to_axes.transform(axes.transData.transform(xy))
        ha = "left" if fx < 1 / 3 else "right" if fx > 2 / 3 else "center"
        side = -1 if fy > 0.8 else 1  # below a point near the top, else above
        offsets = [side * (5 + 11 * step) for step in range(4)] + \
            ([-side * (5 + 11 * step) for step in range(2)] if 0.2 < fy < 0.8 else [])
        for dy in offsets:
            text = axes.annotate(row["ref"], xy, textcoords="offset points", fontsize=8, ha=ha,
                                 xytext=({"left": 6, "right": -6, "center": 0}[ha], dy),
                                 va="bottom" if dy > 0 else "top")
            box = text.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed) or dy == offsets[-1]:
                break
            text.remove()
        placed.append(box)
