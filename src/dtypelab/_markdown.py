"""The one Markdown table: aligned columns, numbers right-aligned.

Example:
    >>> print(markdown_table(["format", "bits", "share"], [["e4m3", 8, "12.5%"], ["posit(6,1)", 6, ""]]))
    | format     | bits | share |
    |------------|-----:|------:|
    | e4m3       |    8 | 12.5% |
    | posit(6,1) |    6 |       |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["markdown_table"]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]],
                   numeric: Sequence[bool] | None = None) -> str:
    """An aligned Markdown table. Floats print with 6 significant digits; a column is right-aligned when
    ``numeric`` says so or, by default, when every cell reads as a number (``1,234.5``, ``12%`` and blanks
    count)."""
    text = [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    for i, row in enumerate(text):
        if len(row) != len(header):
            raise ValueError(f"table row {i} has {len(row)} cells, the header {len(header)}")
    widths = [max([len(h)] + [len(r[i]) for r in text]) for i, h in enumerate(header)]
    if numeric is None:
        numeric = [bool(text) and all(_reads_as_number(r[i]) for r in text) for i in range(len(header))]
    elif len(numeric) != len(header):
        raise ValueError(f"numeric has {len(numeric)} flags for {len(header)} columns")

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if n else c.ljust(w) for c, w, n in zip(cells, widths, numeric,
                                                                                    strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" if n else "-" * (w + 2) for w, n in zip(widths, numeric, strict=True))
    return "\n".join([line(header), rule + "|", *(line(r) for r in text)])


def _reads_as_number(s: str) -> bool:
    s = s.replace(",", "").rstrip("%")
    try:
        float(s)
        return True
    except ValueError:
        return s == ""
