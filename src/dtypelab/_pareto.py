"""The one Pareto front: the points no other point beats at no greater cost.

Example:
    >>> pareto_indices([8, 4, 6, 32], [90.0, 80.0, 70.0, 91.0], maximize=True)
    [1, 0, 3]
    >>> pareto_indices([1, 1, 2], [0.5, 0.2, 0.1])
    [1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["pareto_indices"]


def pareto_indices(costs: Sequence[float], values: Sequence[float], maximize: bool = False) -> list[int]:
    """Indices of the points not dominated in (cost, value), cheapest first.

    A point is kept when its value is strictly better (lower, or higher with ``maximize``) than that of every
    point with a lower cost, or the same cost and a better value; of equal points the first is kept.
    """
    if len(costs) != len(values):
        raise ValueError(f"costs and values differ in length: {len(costs)} and {len(values)}")
    sign = -1.0 if maximize else 1.0
    order = sorted(range(len(costs)), key=lambda i: (costs[i], sign * values[i]))
    kept: list[int] = []
    best = math.inf
    for i in order:
        if sign * values[i] < best:
            kept.append(i)
            best = sign * values[i]
    return kept
