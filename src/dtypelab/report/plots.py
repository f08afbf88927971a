"""Plots (matplotlib, Agg backend, imported lazily); files are written atomically.

Example:
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "acc.png"
    >>> accuracy_plot(["posit(8,1)", "e4m3"], out) == out
    True
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dtypelab._io import atomic_write


def decimal_accuracy(spec: str, x: np.ndarray) -> np.ndarray:
    """-log10(|log10(q(x)/x)|) for positive ``x`` (inf where q(x) == x, NaN where q(x) is 0 or NaN)."""
    import torch

    from dtypelab.formats import fmt

    q = fmt(spec).quantize(torch.from_numpy(x)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.abs(np.log10(q / x))
        acc = -np.log10(err)
    acc[~(q > 0)] = np.nan
    return acc


SAMPLES_PER_BIN = 32


def accuracy_envelope(spec: str, bins: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """The worst decimal accuracy over each interval between adjacent positive values of the format (what the posit
    and LP papers plot): ``(log2 of the interval edges, worst accuracy per interval)``.

    The worst point of ``[v_i, v_i+1]`` is where the format's own rounding switches from ``v_i`` to ``v_i+1``
    (the midpoint for round-to-nearest, the geometric mean for a logarithmic format): found by bisection with the
    format's quantizer, to float64 resolution. Formats over 16 bits (too many values to list) give the worst
    accuracy of ``SAMPLES_PER_BIN`` points in each of ``bins`` equal log2 bins instead.

    >>> edges, worst = accuracy_envelope("e2m1")
    >>> edges.tolist()[:3], round(float(worst[1]), 4)  # [1, 1.5]: worst at the midpoint 1.25
    ([-1.0, 0.0, 0.5849625007211562], 1.0136)
    """
    import torch

    from dtypelab.formats import fmt

    f = fmt(spec)
    if f.bits > 16:
        a, b = math.log2(f.min_positive), math.log2(f.max)
        x = np.exp2(np.linspace(a, b, bins * SAMPLES_PER_BIN, endpoint=False))
        acc = decimal_accuracy(str(f), x).reshape(bins, SAMPLES_PER_BIN)
        acc[np.isinf(acc)] = np.nan  # exact points do not limit the worst case
        return np.linspace(a, b, bins + 1), np.nanmin(np.where(np.isnan(acc), np.inf, acc), axis=1)
    v = f.values().numpy()
    v = v[v > 0]
    if v.size < 2:
        raise ValueError(f"{f} has fewer than two positive values: no interval to plot")
    below, above = v[:-1].copy(), v[1:].copy()  # invariant: q(below) = v_i, q(above) = v_i+1
    for _ in range(80):
        mid = below + (above - below) / 2
        up = f.quantize(torch.from_numpy(mid)).numpy() >= v[1:]
        below, above = np.where(up, below, mid), np.where(up, mid, above)
    err = np.maximum(np.log10(below / v[:-1]), np.log10(v[1:] / above))
    return np.log2(v), -np.log10(err)


def accuracy_plot(specs: Sequence[str], output_path: str | os.PathLike) -> Path:
    """Worst-case decimal accuracy of each format over each interval between its adjacent values (a step curve),
    against log2|x| (the posit / LP paper figures), saved as a PNG; each format in its report colour.

    Raises ValueError for a bad spec (before anything is written).
    """
    from dtypelab.formats import fmt
    from dtypelab.report.colors import color_of

    formats = [fmt(s) for s in specs]
    if not formats:
        raise ValueError("accuracy_plot needs at least one format spec")
    curves = [(str(f), *accuracy_envelope(str(f))) for f in formats]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for name, edges, worst in curves:
        ax.stairs(worst, edges, lw=1.4, color=color_of(name), label=name, baseline=None)
    ax.set_xlabel("log2 |x|")
    ax.set_ylabel("worst decimal accuracy  -log10|log10(q(x)/x)|")
    ax.set_title("Decimal accuracy by format (worst case between adjacent values)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    out = Path(output_path)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return out
