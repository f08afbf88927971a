"""Plain-text / Markdown tables.

Example:
    >>> print(format_table(["e2m1"]).splitlines()[2])
    | e2m1   |    4 |   6 |          0.5 |    1.08 |                 3 |
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from dtypelab._markdown import markdown_table


def format_table(specs: Iterable[str]) -> str:
    """bits, max, min positive, decades of dynamic range and the count of values in [0.5, 2) per format."""
    import torch

    from dtypelab.formats import fmt

    rows = []
    for spec in specs:
        f = fmt(spec)
        if f.bits <= 16:
            v = f.values()
            dense = int(((v >= 0.5) & (v < 2)).sum())
        else:  # codes are monotone in value: count the codes between 0.5 and 2
            c = f.encode(torch.tensor([0.5, 2.0], dtype=torch.float64)).long()
            dense = int(c[1] - c[0])
        rows.append([str(f), f.bits, f.max, f.min_positive, round(math.log10(f.max / f.min_positive), 2), dense])
    return markdown_table(["format", "bits", "max", "min positive", "decades", "values in [0.5,2)"], rows)
