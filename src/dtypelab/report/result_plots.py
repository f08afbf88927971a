"""Plots of results: metric against bits with the Pareto front, per-layer weight histograms with each format's
high-accuracy region (the PositTune figures), and a search's Pareto front. PNG files, written atomically;
matplotlib (Agg) is imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dtypelab._io import atomic_write
from dtypelab._pareto import pareto_indices


def _figure(width: float = 7.0, height: float = 4.2) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return fig, ax


def save_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool = True) -> list[tuple[float, float]]:
    """Points (bits, metric) not dominated by a point with fewer-or-equal bits and a better metric.

    >>> pareto_front([(8, 90.0), (4, 80.0), (6, 70.0), (32, 91.0)])
    [(4, 80.0), (8, 90.0), (32, 91.0)]
    >>> pareto_front([(8, 20.0), (4, 30.0), (6, 40.0)], higher_is_better=False)   # perplexity
    [(4, 30.0), (8, 20.0)]
    """
    kept = pareto_indices([b for b, _ in points], [m for _, m in points], maximize=higher_is_better)
    return [tuple(points[i]) for i in kept]


def metric_vs_bits(rows: Iterable[Sequence[Any]], metric: str, title: str, path: str | os.PathLike,
                   max_labels: int = 10, higher_is_better: bool = True) -> Path:
    """Scatter of ``(label, bits per weight, metric[, lo, hi])`` with 95 % error bars where ``lo``/``hi`` are given,
    the Pareto front drawn through it, each format in its report colour (``*``: adaptive scaling, a triangle). A
    lower-is-better metric spanning more than a factor of 100 (perplexity) gets a log axis.

    The Pareto points are labelled first, then the best others, each only where its label collides with no other
    label or marker (at most ``max_labels``); the legend names every format's colour.
    """
    from matplotlib.lines import Line2D

    from dtypelab.report.colors import color_of, format_name

    rows = [(r[0], float(r[1]), float(r[2]), *(r[3:5] if len(r) >= 5 else (None, None))) for r in rows]
    fig, ax = _figure(9.0, 4.8)
    for label, bits, value, lo, hi in rows:
        marker = "^" if label.endswith("*") else "o"
        yerr = None if lo is None else [[value - lo], [hi - value]]
        ax.errorbar([bits], [value], yerr=yerr, fmt=marker, ms=5, color=color_of(label), elinewidth=0.8,
                    capsize=2, zorder=3)
    front = pareto_front([(b, v) for _, b, v, _, _ in rows], higher_is_better)
    if front:
        ax.step([b for b, _ in front], [v for _, v in front], where="post", color="#c53030", lw=1.2, zorder=2)
    ax.set_xscale("log", base=2)
    values = [v for _, _, v, _, _ in rows if v > 0]
    if not higher_is_better and values and max(values) > 100 * min(values):
        ax.set_yscale("log")
    ax.set_xlabel("stored bits per weight (scales included)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    names = list(dict.fromkeys(format_name(r[0]) for r in rows))
    handles = [Line2D([], [], ls="", marker="o", color=color_of(n), label=n) for n in names]
    handles += [Line2D([], [], ls="", marker="^", color="#4a5568", label="* adaptive scaling"),
                Line2D([], [], color="#c53030", lw=1.2, label="Pareto front")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              ncols=2 if len(handles) > 14 else 1)
    fig.tight_layout()  # the final layout first: labels are placed in display coordinates
    _place_labels(fig, ax, label_order([(r[0], r[1], r[2]) for r in rows], higher_is_better), max_labels)
    return save_figure(fig, path)


def label_order(points: Sequence[tuple[str, float, float]], higher_is_better: bool = True
                ) -> list[tuple[str, float, float]]:
    """The order labels are offered in: the Pareto points (fewest bits first), then the rest, best first.

    >>> [p[0] for p in label_order([("a", 8, 90.0), ("b", 4, 80.0), ("c", 6, 70.0), ("d", 8, 85.0)])]
    ['b', 'a', 'd', 'c']
    """
    front = set(pareto_front([(b, v) for _, b, v in points], higher_is_better))
    sign = -1 if higher_is_better else 1
    return sorted(points, key=lambda p: ((p[1], p[2]) not in front, p[1] if (p[1], p[2]) in front else sign * p[2]))


def _place_labels(fig: Any, ax: Any, points: Sequence[tuple[str, float, float]],
                  max_labels: int) -> list[tuple[str, tuple[float, ...]]]:
    """Annotate points in the given order where a label overlaps no placed label, no marker and stays inside the
    axes (eight candidate positions around each point); returns each placed label with its box (pixels)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    xy = ax.transData.transform([(b, v) for _, b, v in points]) if points else np.empty((0, 2))
    taken = [(x - 4, y - 4, x + 4, y + 4) for x, y in xy]  # every marker
    offsets = [(4, 4), (4, -11), (-4, 4), (-4, -11), (6, -3), (-6, -3), (0, 8), (0, -15)]
    placed = []
    for (label, bits, value), (px, py) in zip(points, xy, strict=True):
        if len(placed) >= max_labels:
            break
        for dx, dy in offsets:
            text = ax.annotate(label, (bits, value), fontsize=7, xytext=(dx, dy), textcoords="offset points",
                               ha="left" if dx >= 0 else "right", zorder=4)
            bb = text.get_window_extent(renderer)
            box = (bb.x0 - 1, bb.y0 - 1, bb.x1 + 1, bb.y1 + 1)
            inside = frame.x0 <= box[0] and box[2] <= frame.x1 and frame.y0 <= box[1] and box[3] <= frame.y1
            mine = (px - 4, py - 4, px + 4, py + 4)
            if inside and not any(_overlap(box, t) for t in taken if t != mine):
                taken.append(box)
                placed.append((label, box))
                break
            text.remove()
    return placed


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def high_accuracy_region(spec: str) -> tuple[float, float]:
    """log2 range of positive values whose relative spacing is within 2x of the format's finest."""
    from dtypelab.formats import fmt

    v = fmt(spec).values().numpy()
    v = v[v > 0]
    gaps = np.diff(v) / v[:-1]
    fine = gaps <= 2 * gaps.min()
    return float(np.log2(v[:-1][fine].min())), float(np.log2(v[:-1][fine].max()))


def weight_histograms(layers: dict[str, torch.Tensor], formats: Sequence[str], title: str,
                      path: str | os.PathLike) -> Path:
    """One panel per layer: histogram of log2|w| with each format's high-accuracy region shaded, and the
    PositTune histogram centre (where adaptive scaling moves 1.0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(layers)
    fig, axes = plt.subplots(n, 1, figsize=(7.0, 2.0 * n + 0.6), dpi=110, squeeze=False)
    from dtypelab.report.colors import color_of

    regions = {f: high_accuracy_region(f) for f in formats}
    for ax, (name, w) in zip(axes[:, 0], layers.items(), strict=True):
        logs = torch.log2(w.detach().abs().double().reshape(-1))
        logs = logs[torch.isfinite(logs)].numpy()
        counts, edges = np.histogram(logs, bins=100)
        ax.hist(logs, bins=100, color="#4a5568", alpha=0.85)
        centre = (edges[int(counts.argmax())] + edges[int(counts.argmax()) + 1]) / 2
        ax.axvline(centre, color="black", ls="--", lw=1, label=f"fullest bin 2^{centre:.2f}")
        for f, (lo, hi) in regions.items():
            ax.axvspan(lo, hi, color=color_of(f), alpha=0.12, label=f)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(min(logs.min(), *(r[0] for r in regions.values())) - 1, max(logs.max(), 4) + 1)
    axes[0, 0].legend(fontsize=7, ncols=2, loc="upper left")
    axes[-1, 0].set_xlabel("log2 |w|")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def pareto_plot(result: Any, path: str | os.PathLike) -> Path:
    """A search result: the GA's Pareto points, its best, random search's best, uniform formats and FP32."""
    key = result.primary_metric
    fig, ax = _figure()
    ax.scatter([e.bits_per_weight for e in result.pareto], [e.metrics[key] for e in result.pareto],
               label="GA Pareto front", color="#2b6cb0", zorder=3)
    ax.scatter([result.best.bits_per_weight], [result.best.metrics[key]], marker="*", s=160, color="#c53030",
               label="GA best", zorder=4)
    ax.scatter([result.random_best.bits_per_weight], [result.random_best.metrics[key]], marker="x", s=60,
               color="#744210", label="random search best", zorder=4)
    for e in result.uniform:
        ax.scatter([e.bits_per_weight], [e.metrics[key]], marker="s", s=22, color="#718096", zorder=2)
        ax.annotate(e.label.split("/")[0], (e.bits_per_weight, e.metrics[key]), fontsize=7, xytext=(3, -8),
                    textcoords="offset points")
    ax.axhline(result.fp32[key], color="black", ls="--", lw=1, label="FP32")
    ax.axvline(result.budget, color="#c53030", ls=":", lw=1, label=f"budget {result.budget} bits")
    ax.set_xlabel("stored bits per weight (scales included)")
    ax.set_ylabel(key)
    ax.set_title(f"{result.workload}: mixed-configuration search ({result.objective} objective)")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def sensitivity_plot(layers: Sequence[str], figures: dict[str, Sequence[float]], path: str | os.PathLike,
                     title: str = "") -> Path:
    """One horizontal bar panel per figure (metric drop, output KL, Fisher ...), layers in the given order
    (most sensitive at the top); a panel whose values are all positive uses a log axis when they span more
    than three decades.

    Example:
        >>> import tempfile, pathlib
        >>> p = sensitivity_plot(["a", "b"], {"drop": [2.0, 0.5], "kl": [0.1, 0.01]},
        ...                      pathlib.Path(tempfile.mkdtemp()) / "s.png")
        >>> p.stat().st_size > 0
        True
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = max(len(figures), 1)
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 1.2 + 0.28 * max(len(layers), 1)), dpi=110,
                             sharey=True, squeeze=False)
    ys = np.arange(len(layers))
    for ax, (label, values) in zip(axes[0], figures.items(), strict=False):
        v = np.asarray(values, dtype=float)
        ax.barh(ys, v, color="#4c72b0")
        positive = v[v > 0]
        if len(positive) == len(v) and len(v) and positive.max() / positive.min() > 1e3:
            ax.set_xscale("log")
        ax.set_title(label, fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0][0].set_yticks(ys, list(layers))
    axes[0][0].invert_yaxis()
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
