"""The accumulator study's section: recall@1, fidelity and energy per example for each storage x accumulator cell.

Reads the ``arith.json`` that :func:`dtypelab.experiments.arith.write` writes (``dtypelab arith``,
``benchmarks/arith_sweep.py``); the sweep report adds this section when its run directory holds the file.

Example:
    >>> from dtypelab.report.document import Document
    >>> rows = [{"storage": "e4m3", "accumulator": "bf16", "recall@1": 0.5, "fidelity": 0.99, "energy_pj": 2e6,
    ...          "seconds": 3.0}]
    >>> doc = section(Document("r"), {"workload": "minilm", "limit": 2, "rows": rows})
    >>> doc.markdown().count("| e4m3")
    1
"""

from __future__ import annotations

from typing import Any

from dtypelab.experiments.arith import HEADER, INTRO, caption, table
from dtypelab.report.document import Document


def section(doc: Document, result: dict[str, Any]) -> Document:
    """Add the study's table to ``doc`` under its heading."""
    doc.heading(caption(result.get("workload", "minilm"), result.get("limit")))
    doc.text(INTRO)
    doc.table(HEADER, table(result["rows"]))
    return doc


__all__ = ["section"]
