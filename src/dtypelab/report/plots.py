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


def accuracy_plot(specs: Sequence[str], output_path: str | os.PathLike, points: int = 20_001) -> Path:
    """Decimal accuracy of each format against log2|x| (the posit / LP paper figures), saved as a PNG.

    Raises ValueError for a bad spec (before anything is written).
    """
    from dtypelab.formats import fmt

    formats = [fmt(s) for s in specs]
    if not formats:
        raise ValueError("accuracy_plot needs at least one format spec")
    lo = min(math.log2(f.min_positive) for f in formats if f.min_positive > 0) - 2
    hi = max(math.log2(f.max) for f in formats) + 2
    lo, hi = max(lo, -150.0), min(hi, 150.0)
    log2x = np.linspace(lo, hi, points)
    x = np.exp2(log2x)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5))
    for f in formats:
        acc = decimal_accuracy(str(f), x)
        acc[np.isinf(acc)] = np.nan  # exactly representable points: off the scale
        ax.plot(log2x, acc, lw=1, label=str(f))
    ax.set_xlabel("log2 |x|")
    ax.set_ylabel("decimal accuracy  -log10|log10(q(x)/x)|")
    ax.set_title("Decimal accuracy by format")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out = Path(output_path)
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)
    return out
