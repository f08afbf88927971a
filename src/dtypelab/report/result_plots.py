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


def pareto_front(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points (bits, metric) not dominated by a point with fewer-or-equal bits and a higher metric.

    >>> pareto_front([(8, 90.0), (4, 80.0), (6, 70.0), (32, 91.0)])
    [(4, 80.0), (8, 90.0), (32, 91.0)]
    """
    kept = pareto_indices([b for b, _ in points], [m for _, m in points], maximize=True)
    return [tuple(points[i]) for i in kept]


def metric_vs_bits(rows: Iterable[tuple[str, float, float]], metric: str, title: str, path: str | os.PathLike) -> Path:
    """Scatter of (label, bits per weight, metric) with the Pareto front drawn through it."""
    rows = list(rows)
    fig, ax = _figure()
    for label, bits, value in rows:
        ax.scatter(bits, value, s=28, zorder=3)
        ax.annotate(label, (bits, value), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = pareto_front([(b, v) for _, b, v in rows])
    if front:
        ax.step([b for b, _ in front], [v for _, v in front], where="post", color="#c53030", lw=1.2,
                label="Pareto front", zorder=2)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("stored bits per weight (scales included)")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


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
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    regions = {f: high_accuracy_region(f) for f in formats}
    for ax, (name, w) in zip(axes[:, 0], layers.items(), strict=True):
        logs = torch.log2(w.detach().abs().double().reshape(-1))
        logs = logs[torch.isfinite(logs)].numpy()
        counts, edges = np.histogram(logs, bins=100)
        ax.hist(logs, bins=100, color="#4a5568", alpha=0.85)
        centre = (edges[int(counts.argmax())] + edges[int(counts.argmax()) + 1]) / 2
        ax.axvline(centre, color="black", ls="--", lw=1, label=f"fullest bin 2^{centre:.2f}")
        for i, (f, (lo, hi)) in enumerate(regions.items()):
            ax.axvspan(lo, hi, color=colors[i % len(colors)], alpha=0.12, label=f)
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
