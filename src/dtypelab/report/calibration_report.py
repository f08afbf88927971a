"""The calibration comparison's section: 4-bit weights by rounding method, 8-bit activations by scale rule.

Reads the ``calibration.json`` that ``benchmarks/calibration_figures.py`` writes (rows ``{part, format, method,
metrics, primary_metric}``; ``part`` is ``fp32``, ``weights`` or ``activations``) and gives two tables: rows the
formats, columns the weight methods (:data:`METHODS`) or the activation rules, cells the primary metric (and
the first of :data:`SECOND` every row has: ``/ fidelity`` for MiniLM, ``/ kl`` for a language model), with the
FP32 value in the heading. The sweep report adds
this section when its run directory holds the file.

Example:
    >>> rows = [{"part": "fp32", "format": "fp32", "method": "none", "metrics": {"m": 1.0}, "primary_metric": "m"},
    ...         {"part": "weights", "format": "int4", "method": "rtn", "metrics": {"m": 0.5}, "primary_metric": "m"}]
    >>> print(markdown({"workload": "w", "rows": rows}).splitlines()[4])
    | int4   | 0.5 |      |     |
"""

from __future__ import annotations

from typing import Any

from dtypelab._markdown import markdown_table
from dtypelab.report.document import Document

METHODS = ("rtn", "gptq", "awq")
PARTS = {"weights": ("4-bit weights (per channel, absmax scales), activations FP32", METHODS),
         "activations": ("8-bit activations (per tensor, static scales), weights FP32",
                         ("absmax", "percentile:99.99", "entropy"))}


#: secondary metrics shown beside the primary one (the first every row has), with their number format
SECOND = {"fidelity": ".4f", "kl": ".2g"}


def _shown(m: dict[str, float], key: str, second: str | None, text: bool = False) -> object:
    if second:
        return f"{m[key]:.4f} / {m[second]:{SECOND[second]}}"
    return f"{m[key]:.4f}" if text else round(m[key], 4)


def tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[object]]]]:
    """``(caption, header, rows)`` per part present in ``result``."""
    rows = result["rows"]
    fp32 = next((r for r in rows if r["part"] == "fp32"), None)
    out = []
    for part, (caption, columns) in PARTS.items():
        mine = [r for r in rows if r["part"] == part]
        if not mine:
            continue
        key = mine[0]["primary_metric"]
        second = next((k for k in SECOND if k != key and all(k in r["metrics"] for r in mine)), None)
        cell = {(r["format"], r["method"]): _shown(r["metrics"], key, second) for r in mine}
        formats = list(dict.fromkeys(r["format"] for r in mine))
        body = [[f, *[cell.get((f, c), "") for c in columns]] for f in formats]
        what = f"{key} / {second}" if second else key
        ref = f"; FP32 {_shown(fp32['metrics'], key, second, text=True)}" if fp32 else ""
        out.append((f"{result['workload']}: {caption} ({what}{ref})", ["format", *columns], body))
    return out


def markdown(result: dict[str, Any]) -> str:
    """The tables as Markdown, each under its caption."""
    return "\n\n".join(f"{caption}\n\n{markdown_table(header, body)}" for caption, header, body in tables(result))


def section(doc: Document, result: dict[str, Any]) -> Document:
    """Add the tables to ``doc`` under one heading each."""
    for caption, header, body in tables(result):
        doc.heading(caption)
        doc.table(header, body)
    return doc


__all__ = ["METHODS", "SECOND", "tables", "markdown", "section"]
