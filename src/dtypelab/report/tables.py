"""Plain-text / Markdown tables.

Example:
    >>> print(format_table(["e2m1"]).splitlines()[2])
    | e2m1   |    4 |   6 |          0.5 |    1.08 |                 3 |
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Aligned Markdown table; numbers right-aligned."""
    text_rows = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text_rows)) if text_rows else len(h) for i, h in enumerate(header)]
    numeric = [all(_is_number(r[i]) for r in text_rows) if text_rows else False for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric, strict=True)) + " |"

    rule = [("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric, strict=True)]
    sep = "|" + "|".join(rule) + "|"
    return "\n".join([line(list(header)), sep, *(line(r) for r in text_rows)])


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


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
