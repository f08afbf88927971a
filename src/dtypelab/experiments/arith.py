"""The accumulator study: one storage format, many ways to add the products (MiniLM by default).

Each cell stores the weights and inputs of every Linear layer and the operands of BERT attention's Q·Kᵀ and
A·V (Q, K, V, the probabilities) in a storage format (Embeddings stay FP32), and simulates the arithmetic of
all of them with one :class:`~dtypelab.arith.Compute`: fp32, bf16 and fp16 accumulators (chunks of 32), the
tensor-core model ``align:13`` (groups of 32 products, promotion into fp32 every 128: DeepSeek-V3's H800
observation), the quire, and the LP datapath of seed 001 (LP storage, the log-domain multiply -- exact -- and a
32-bit fixed-point accumulator with 16 fraction bits, products truncated onto it, saturating). A row
``none`` is today's storage-only simulation (FP32 arithmetic). :func:`write` puts the rows into a run
directory (``arith.json``, rendered by the sweep report, and ``arith.md``).

Example:
    >>> [c.label for c in default_cells()][:3]
    ['e4m3 | none', 'e4m3 | fp32', 'e4m3 | bf16']
    >>> cell_config(default_cells()[2])["compute"]
    {'accumulator': 'bf16', 'chunk': 32}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtypelab._io import atomic_write
from dtypelab._markdown import markdown_table

STORAGES = ("e4m3", "posit(8,1)")
ACCUMULATORS: dict[str, dict[str, Any] | None] = {
    "none": None,
    "fp32": {"accumulator": "fp32", "chunk": 32},
    "bf16": {"accumulator": "bf16", "chunk": 32},
    "fp16": {"accumulator": "fp16", "chunk": 32},
    "align:13/128": {"accumulator": "align:13", "group": 32, "chunk": 128},
    "quire": {"accumulator": "quire"},
}
LP_STORAGE = "lp(8,2,2,0)/tensor/log2-hist"
LP_DATAPATH = {"accumulator": "fixed(32,16)/rz", "overflow": "saturate"}


@dataclass(frozen=True)
class ArithCell:
    """One row: a storage scheme and a compute config (None: FP32 arithmetic); ``static``: calibrated scales."""

    storage: str
    accumulator: str
    compute: dict[str, Any] | None
    static: bool = False

    @property
    def label(self) -> str:
        return f"{self.storage} | {self.accumulator}"


def default_cells() -> list[ArithCell]:
    cells = [ArithCell(s, name, c) for s in STORAGES for name, c in ACCUMULATORS.items()]
    cells += [ArithCell(LP_STORAGE, "none", None, static=True),
              ArithCell(LP_STORAGE, "LP datapath: fixed(32,16)/rz", LP_DATAPATH, static=True)]
    return cells


def cell_config(cell: ArithCell) -> dict[str, Any]:
    """The quantize_model config of a cell."""
    cfg: dict[str, Any] = {"weights": cell.storage, "activations": cell.storage,
                           "activation_scales": "static" if cell.static else "dynamic",
                           "layers": [{"match": "Embedding", "weights": None}]}
    attention: dict[str, Any] = {"match": "BertSelfAttention", "operands": cell.storage}
    if cell.compute is not None:
        cfg["compute"] = cell.compute
        attention["compute"] = cell.compute
    cfg["ops"] = [attention]
    return cfg


def run(workload: Any, cells: list[ArithCell] | None = None, limit: int | None = None,
        progress: bool = True) -> list[dict[str, Any]]:
    """Evaluate every cell (and FP32) on ``workload``; one dict per row (metrics, energy, seconds)."""
    from dtypelab.experiments.evaluate import evaluate

    rows = []
    fp32 = evaluate(workload, None, limit=limit)
    rows.append({"storage": "fp32", "accumulator": "fp32 (torch)", "compute": None, **fp32.metrics,
                 "energy_pj": fp32.energy_pj, "seconds": fp32.seconds})
    for cell in cells or default_cells():
        calib = workload.calibration() if cell.static else None
        o = evaluate(workload, cell_config(cell), limit=limit, calibration=calib)
        rows.append({"storage": cell.storage, "accumulator": cell.accumulator, "compute": cell.compute, **o.metrics,
                     "energy_pj": o.energy_pj, "seconds": o.seconds})
        if progress:
            print(f"{cell.label}: {o.primary_metric} {o.primary:.4f}, fidelity {o.metrics.get('fidelity', 0):.5f}, "
                  f"{o.seconds:.0f} s", flush=True)
    return rows


HEADER = ["storage", "accumulator", "recall@1", "fidelity", "energy µJ", "seconds"]


def table(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One line per row of :func:`run` under :data:`HEADER` (energy of one example in µJ)."""
    return [[r["storage"], r["accumulator"], f"{r.get('recall@1', float('nan')):.4f}",
             f"{r.get('fidelity', float('nan')):.5f}",
             f"{r['energy_pj'] / 1e6:.2f}" if r.get("energy_pj") else "", f"{r['seconds']:.0f}"] for r in rows]


def caption(workload: str, limit: int | None) -> str:
    scope = f"the first {limit} topics" if limit else "the whole task"
    return f"Accumulators ({workload}, {scope})"


INTRO = ("Storage of every Linear layer's weights and inputs and of the attention operands; arithmetic as the "
         "accumulator column says (none: FP32 arithmetic, as the storage-only simulation); energy of one "
         "example forward (the lab's table, full accounting, attention products priced with the same compute).")


def section(rows: list[dict[str, Any]], workload: str = "minilm", limit: int | None = None) -> str:
    """The report section: one row per cell, recall@1, fidelity and energy per example."""
    return f"## {caption(workload, limit)}\n\n{INTRO}\n\n{markdown_table(HEADER, table(rows))}\n"


def write(rows: list[dict[str, Any]], out: str | Path, workload: str = "minilm",
          limit: int | None = None) -> list[Path]:
    """``arith.json`` (``{workload, limit, rows}``: the sweep report's section when it lies in a run directory)
    and ``arith.md`` in ``out``, written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = {"workload": workload, "limit": limit, "rows": rows}
    return [atomic_write(out / "arith.json", json.dumps(data, indent=1, default=str)),
            atomic_write(out / "arith.md", section(rows, workload, limit))]


__all__ = ["ArithCell", "default_cells", "cell_config", "run", "table", "caption", "section", "write", "HEADER",
           "INTRO", "STORAGES", "ACCUMULATORS", "LP_STORAGE", "LP_DATAPATH"]
