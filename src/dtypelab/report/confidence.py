"""95 % intervals for the report's proportions (top-1, recall@k): exact binomial (Clopper-Pearson) intervals
over the evaluated items, whose number the workload's metrics record (``n`` images, ``n_queries`` queries).

A metric is a proportion when :data:`PROPORTIONS` names it: the metric key that counts its items, and its scale
(100 for a percentage, 1 for a fraction). Two results differ only when their intervals do not overlap (a
conservative rule: the report never calls noise a difference).

Example:
    >>> iv = interval({"top1": 98.61111, "n": 360.0}, "top1")
    >>> iv.k, iv.n, round(iv.lo, 2), round(iv.hi, 2)
    (355, 360, 96.79, 99.55)
    >>> iv.show(2)
    '98.61 ± 1.8'
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Proportion:
    """A metric that is a share of items: ``count`` is the metric key holding the number of items."""

    count: str
    scale: float  # 100: a percentage; 1: a fraction


PROPORTIONS: dict[str, Proportion] = {
    "top1": Proportion("n", 100.0),
    "recall@1": Proportion("n_queries", 1.0),
    "recall@5": Proportion("n_queries", 1.0),
}
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A value and its 95 % interval ``[lo, hi]`` in the metric's units; ``k`` of ``n`` items (0 if unknown)."""

    value: float
    lo: float
    hi: float
    k: int = 0
    n: int = 0

    @property
    def half(self) -> float:
        """The larger side of the interval (what ``±`` shows: the exact interval need not be symmetric)."""
        return max(self.value - self.lo, self.hi - self.value)

    def overlaps(self, other: Interval) -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    def above(self, other: Interval) -> bool:
        """This is higher than ``other`` beyond doubt (the intervals do not overlap)."""
        return self.lo > other.hi

    def show(self, digits: int) -> str:
        """``value ± half`` (the half-width to two significant digits, at most ``digits`` decimals)."""
        if not self.n:
            return f"{self.value:.{digits}f}"
        half = float(f"{self.half:.2g}")
        decimals = min(digits, max(0, -int(f"{half:e}".split("e")[1]) + 1)) if half else digits
        return f"{self.value:.{digits}f} ± {half:.{decimals}f}"


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``level`` interval of a binomial share ``k / n``.

    >>> [round(v, 4) for v in clopper_pearson(0, 10)], [round(v, 4) for v in clopper_pearson(5, 10)]
    ([0.0, 0.3085], [0.1871, 0.8129])
    """
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"a binomial share needs 0 <= k <= n and n >= 1, got k={k}, n={n}")
    from scipy.stats import beta

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def interval(metrics: dict[str, float], key: str) -> Interval | None:
    """The 95 % interval of ``metrics[key]``, or None when it is no known proportion or its item count is
    missing (then nothing is claimed about its uncertainty)."""
    prop = PROPORTIONS.get(key)
    if prop is None or key not in metrics or not metrics.get(prop.count):
        return None
    n = int(round(metrics[prop.count]))
    value = metrics[key]
    k = int(round(value / prop.scale * n))
    if abs(k - value / prop.scale * n) > 1e-6 * max(n, 1):
        raise ValueError(f"{key} = {value} is not a share of {n} items ({prop.count}); the results are corrupt")
    lo, hi = clopper_pearson(k, n)
    return Interval(value, lo * prop.scale, hi * prop.scale, k, n)


__all__ = ["Interval", "Proportion", "PROPORTIONS", "clopper_pearson", "interval"]
