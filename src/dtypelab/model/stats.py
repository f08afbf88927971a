"""Quantization statistics of one tensor under one scheme: error, saturation, flushing, binade usage.

``TensorStats`` adds up over tensors (the weights of a MultiheadAttention, the calibration batches of a
dynamically scaled activation), so a layer's figures are exact totals, not averages of averages.

* ``mse`` = mean (x - Q(x))^2; ``sqnr_db`` = 10 log10(sum x^2 / sum (x - Q(x))^2) (inf when exact);
* ``saturated`` = fraction of elements with |x / s| beyond the format's max (clipped);
* ``flushed`` = fraction of elements that are nonzero but quantize to zero;
* ``binades`` = how many quantized nonzero elements have floor(log2 |q|) = e, with q in the format's own units
  (x / s rounded): the exponent / regime usage seed 002 counted.

Example:
    >>> import torch
    >>> from dtypelab.schemes import Scheme
    >>> st = tensor_stats(torch.tensor([0.0, 0.25, 1.0, 3.0, 100.0]), Scheme.parse("e2m1"))
    >>> st.saturated, st.flushed, st.binades
    (0.2, 0.2, {0: 1, 1: 1, 2: 1})
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import torch

from dtypelab.schemes import Scheme


@dataclass
class TensorStats:
    """Running totals (see the module docstring for the derived figures)."""

    numel: int = 0
    sse: float = 0.0
    energy: float = 0.0
    n_saturated: int = 0
    n_flushed: int = 0
    storage_bits: int = 0
    binade_counts: Counter = field(default_factory=Counter)
    scales: list[torch.Tensor] = field(default_factory=list)
    dequantized: torch.Tensor | None = field(default=None, repr=False)
    measured: bool = True  # False: only numel and storage_bits are known (see :func:`size_only`)

    def __iadd__(self, other: TensorStats) -> TensorStats:
        self.numel += other.numel
        self.sse += other.sse
        self.energy += other.energy
        self.n_saturated += other.n_saturated
        self.n_flushed += other.n_flushed
        self.storage_bits += other.storage_bits
        self.measured = self.measured and other.measured
        self.binade_counts.update(other.binade_counts)
        self.scales.extend(other.scales)
        return self

    @property
    def mse(self) -> float:
        return self.sse / self.numel if self.numel else 0.0

    @property
    def sqnr_db(self) -> float:
        if self.sse == 0:
            return math.inf
        return 10 * math.log10(self.energy / self.sse) if self.energy > 0 else -math.inf

    @property
    def saturated(self) -> float:
        return self.n_saturated / self.numel if self.numel else 0.0

    @property
    def flushed(self) -> float:
        return self.n_flushed / self.numel if self.numel else 0.0

    @property
    def binades(self) -> dict[int, int]:
        return dict(sorted(self.binade_counts.items()))

    @property
    def bits_per_element(self) -> float:
        return self.storage_bits / self.numel if self.numel else 0.0

    def scale_summary(self) -> dict[str, float | int]:
        """Number of scales, their min / median / max, and log2 of min and max."""
        if not self.scales:
            return {}
        s = torch.cat([t.reshape(-1).double().cpu() for t in self.scales])
        s = s[torch.isfinite(s)]
        if not s.numel():
            return {"count": 0}
        lo, hi = float(s.min()), float(s.max())
        return {"count": int(s.numel()), "min": lo, "median": float(s.median()), "max": hi,
                "log2_min": math.log2(lo) if lo > 0 else -math.inf, "log2_max": math.log2(hi) if hi > 0 else -math.inf}


def size_only(x: torch.Tensor, scheme: Scheme) -> TensorStats:
    """Just the exact stored size of ``x`` under ``scheme`` (no rounding, no scale rule run)."""
    return TensorStats(numel=x.numel(), storage_bits=scheme.storage_bits(x.shape), measured=False)


def tensor_stats(x: torch.Tensor, scheme: Scheme, scales: torch.Tensor | None = None,
                 keep_dequantized: bool = False) -> TensorStats:
    """Statistics of quantizing ``x`` with ``scheme`` (scales computed from ``x`` unless given), computed the way
    :func:`dtypelab.schemes.fake_quantize` rounds (same working dtype). With ``keep_dequantized`` the result's
    ``dequantized`` holds ``fake_quantize(x, scheme, scales)`` (bit for bit)."""
    sc = scheme.scale(x, scales)
    rows, s = sc.rows, sc.scales
    scaled = rows / sc.divisor
    q = scheme.round_scaled(scaled)
    deq = q * sc.divisor
    st = TensorStats(numel=x.numel())
    err = (deq - rows).reshape(-1)
    st.sse = float(torch.dot(err, err))
    del err
    flat = rows.reshape(-1)
    st.energy = float(torch.dot(flat, flat))
    st.n_saturated = int((scaled.abs_() > scheme.element_range.max).sum())
    del scaled
    n_zero_q = int((q == 0).sum())
    st.n_flushed = n_zero_q - int((rows == 0).sum())  # a zero always quantizes to zero
    if n_zero_q < q.numel():
        e = torch.frexp(q).exponent  # floor(log2|q|) + 1 for q != 0; 0 for q == 0
        lo = int(e.min())
        counts = torch.bincount((e - lo).reshape(-1)).tolist()
        if n_zero_q:
            counts[-lo] -= n_zero_q  # the zeros' slot (exponent 0)
        st.binade_counts = Counter({lo + i - 1: c for i, c in enumerate(counts) if c})
    st.storage_bits = scheme.storage_bits(x.shape, s.numel())
    st.scales = [s.reshape(-1).cpu()]
    if keep_dequantized:
        st.dequantized = scheme.granularity.ungroup(deq, sc.layout).to(x.dtype)
    return st


__all__ = ["TensorStats", "tensor_stats", "size_only"]
