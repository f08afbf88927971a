"""A sensitivity ranking as the search's prior: initial genomes that spend the bit budget on the layers the
ranking calls most sensitive (``dtypelab sensitivity``, :mod:`dtypelab.experiments.sensitivity`).

For each ceiling ``c = 0, 1, ...`` (one seed per kept option rank): every layer starts at its ``c``-th
cheapest option; then, while the genome is over the budget, the least sensitive layer still above its cheapest
option steps one option cheaper; then, most sensitive first, each layer steps costlier as far as the budget
allows. Distinct seeds only. A layer the ranking does not name counts as least sensitive. The seeds are
feasible, distinct and join the GA's first population before the uniform ones (``search(..., prior=...)``,
``dtypelab search --prior runs/sensitivity-WORKLOAD``).

Example:
    >>> costs = [[1, 2, 4]] * 3                                  # three layers, options cost 1, 2, 4
    >>> prior_seeds(["b", "a", "c"], ["a", "b", "c"], costs, budget=7)
    [(1, 2, 0), (1, 1, 1)]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Genome = tuple[int, ...]


def load_ranking(source: Any) -> list[str]:
    """Layer names, most sensitive first, from a :class:`SensitivityResult`, a list of names, or a path to a
    ``sensitivity.json`` or the run directory holding it."""
    if hasattr(source, "ranking"):
        return list(source.ranking())
    if isinstance(source, (list, tuple)) and all(isinstance(n, str) for n in source):
        return list(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        path = path / "sensitivity.json" if path.is_dir() else path
        try:
            data = json.loads(path.read_text())
            return [row["layer"] for row in data["rows"]]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"cannot read a sensitivity ranking from {str(path)!r} ({type(e).__name__}: {e}); "
                             "give the run directory of 'dtypelab sensitivity' or its sensitivity.json") from None
    raise TypeError(f"a prior is a sensitivity result, a list of layer names or a path, got {type(source).__name__}")


def prior_seeds(ranking: Sequence[str], layers: Sequence[str], costs: Sequence[Sequence[float]],
                budget: float) -> list[Genome]:
    """One seed per ceiling (see the module docstring): ``costs[i]`` are layer ``layers[i]``'s option costs,
    cheapest first."""
    if len(layers) != len(costs):
        raise ValueError(f"{len(layers)} layers but {len(costs)} cost lists")
    unknown = [n for n in ranking if n not in layers]
    if len(unknown) == len(ranking) and ranking:
        raise ValueError(f"the sensitivity ranking names none of the searched layers (it has {list(ranking)[:3]}, "
                         f"the search {list(layers)[:3]}): was it measured on this workload?")
    position = {n: i for i, n in enumerate(ranking)}
    order = sorted(range(len(layers)), key=lambda i: (position.get(layers[i], len(ranking)), i))  # most first
    seeds: list[Genome] = []
    for ceiling in range(max(len(c) for c in costs)):
        genome = [min(ceiling, len(c) - 1) for c in costs]
        total = sum(costs[i][g] for i, g in enumerate(genome))
        for i in reversed(order):  # least sensitive first, each down to its cheapest if need be
            while total > budget and genome[i] > 0:
                total += costs[i][genome[i] - 1] - costs[i][genome[i]]
                genome[i] -= 1
        for i in order:  # most sensitive first, each up as far as the budget allows
            while genome[i] + 1 < len(costs[i]) and total + costs[i][genome[i] + 1] - costs[i][genome[i]] <= budget:
                total += costs[i][genome[i] + 1] - costs[i][genome[i]]
                genome[i] += 1
        if total <= budget and tuple(genome) not in seeds:
            seeds.append(tuple(genome))
    return seeds


__all__ = ["load_ranking", "prior_seeds"]
