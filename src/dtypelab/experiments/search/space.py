"""Search spaces: the candidate weight schemes of each layer, their exact cost in bits, and pruning.

* ``lp`` — logarithmic posits ``lp(n,es,rs,sf)/tensor/none``, n 3..8, es 0..2, rs in {2, n-1}, and
  sf in {s0-1, s0, s0+1} where ``s0 = -round(Σw² log2|w| / Σw²)`` centres the layer's weight energy on 1
  (sf is part of the format, like es; the value set is ``2^(... - sf)``);
* ``posit`` — ``posit(n,es)/GRAN/RULE``, n 3..8, es 0..2, the PositTune scale rules log2-energy, log2-hist
  and sqnr, per tensor or per channel (scales counted);
* a list of scheme strings — the same candidates for every layer.

An option's cost is the layer's exact stored bits (``quantize(W, scheme).storage_bits``, counted without
rounding). Options that are dominated for a layer — another option is no costlier and has a lower layer
divergence — are pruned before the search (:func:`pareto_options`).

Example:
    >>> import torch
    >>> w = torch.randn(16, 16) * 0.05
    >>> opts = weight_options("lp", w)
    >>> len(opts) > 50, str(opts[0]).startswith("lp(3,")
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dtypelab._pareto import pareto_indices
from dtypelab.schemes import Scheme

SPACES = ("lp", "posit")


def energy_centre(w: torch.Tensor) -> float:
    """``Σw² log2|w| / Σw²`` (0 for an all-zero tensor)."""
    w = w.detach().double().reshape(-1)
    w = w[w != 0]
    if w.numel() == 0:
        return 0.0
    sq = w * w
    return float((sq * torch.log2(w.abs())).sum() / sq.sum())


def weight_options(space: str | Sequence[str], weight: torch.Tensor) -> list[Scheme]:
    """Candidate weight schemes of one layer."""
    if not isinstance(space, str):
        if not space:
            raise ValueError("a scheme list for the search space must not be empty")
        return [Scheme.parse(s) for s in space]
    if space == "lp":
        s0 = -round(energy_centre(weight))
        options = []
        for n in range(3, 9):
            for es in range(0, 3):
                for rs in sorted({min(2, n - 1), n - 1}):
                    for sf in (s0 - 1, s0, s0 + 1):
                        options.append(Scheme.parse(f"lp({n},{es},{rs},{sf})"))
        return options
    if space == "posit":
        return [Scheme.parse(f"posit({n},{es})/{gran}/{rule}")
                for n in range(3, 9) for es in range(0, 3)
                for gran in ("tensor", "channel") for rule in ("log2-energy", "log2-hist", "sqnr")]
    raise ValueError(f"unknown search space {space!r}; valid: {', '.join(SPACES)} or a list of schemes")


def pareto_options(costs: Sequence[float], errors: Sequence[float]) -> list[int]:
    """Indices of the options not dominated in (cost, error), sorted by cost."""
    return pareto_indices(costs, errors)
