"""Energy of one forward pass: count every multiply and add with its operand formats, price it from a table.

Two ways to count (``accounting=``), both documented term by term in ``docs/cost.md``:

* ``"lab"`` — exactly the lab's (seed 004): per dot product of length K, K multiplies and K-1 accumulate
  adds; a quantized layer adds one bias add per output at the operand width and one rescale per output
  (a shift for power-of-two scales). An FP32 layer counts no bias. Linear(128->10) at batch 1: 5879 pJ in
  FP32, 383.4 pJ with int8 weights and uint8 activations on power-of-two static scales.
* ``"full"`` (default) — the lab's terms plus what it leaves out: bias adds at the accumulator width for
  every layer (FP32 too), zero-point subtraction of every unsigned-integer operand element, the rescale of
  every output (per block for block scales; a fixed-point multiply + shift where scales are not powers of
  two), the measurement and application of dynamic activation scales, and the 1/sqrt(d) scaling of
  unquantized attention scores.

Example:
    >>> import torch, dtypelab as dl
    >>> layer = torch.nn.Linear(128, 10)
    >>> x = torch.rand(1, 128)
    >>> dl.cost.energy(layer, None, example=x, accounting="lab").total_pj
    5879.0
    >>> cfg = {"weights": "int8/tensor/pow2", "activations": "uint8/tensor/pow2"}
    >>> dl.cost.energy(layer, cfg, example=x, accounting="lab").total_pj
    383.4
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from torch import nn

from dtypelab._markdown import markdown_table
from dtypelab.cost.plans import OpPlan, Plan, resolve_op_plans, resolve_plans
from dtypelab.cost.pricing import Datapath, Op, compute_datapath, datapath, priced, rescale_ops
from dtypelab.cost.table import EnergyTable, load_table
from dtypelab.cost.trace import OpRecord, count
from dtypelab.schemes import PerBlock, Scheme

ACCOUNTING = ("lab", "full")
TERMS = ("mul", "acc", "promote", "bias", "zero_point", "rescale", "convert", "lookup", "dynamic_scale",
         "attn_scale")
TERM_DOC = {
    "mul": "one multiply per product",
    "acc": "K-1 accumulate adds per dot product of length K (at the width of the layer's compute accumulator, if set)",
    "promote": "align:k accumulators: one add in the promotion format per chunk of products",
    "bias": "one bias add per output (lab: quantized layers only, at the operand width; full: every layer, at the "
            "accumulator width)",
    "zero_point": "one subtraction per element of an operand with a zero point (unsigned integers)",
    "rescale": "bringing each output (each block partial sum for block scales) back to scale",
    "convert": "log -> linear conversion of each LP product before it is accumulated",
    "lookup": "one table lookup per codebook element dequantized (NF4, DT, codebook)",
    "dynamic_scale": "dynamic activation scales: an absmax compare and a scale multiply per activation element",
    "attn_scale": "the 1/sqrt(d) multiply of each unquantized attention score (folded into the rescale otherwise)",
}


@dataclass(frozen=True)
class TermLine:
    """``count`` operations ``op`` (``pj_each`` each) that make up ``term`` of one layer."""

    term: str
    op: str
    count: int
    pj_each: float

    @property
    def pj(self) -> float:
        return float(_exact(self))


def _exact(line: TermLine) -> Decimal:
    return Decimal(repr(line.pj_each)) * line.count


@dataclass
class LayerEnergy:
    """One row: a layer of the plan, or an unplanned module that ran matmuls (e.g. attention)."""

    name: str
    weight: str
    activation: str
    ops: list[str] = field(default_factory=list)
    macs: int = 0
    lines: list[TermLine] = field(default_factory=list)

    @property
    def total_pj(self) -> float:
        return float(sum((_exact(x) for x in self.lines), Decimal(0)))

    def term_pj(self, term: str) -> float:
        return float(sum((_exact(x) for x in self.lines if x.term == term), Decimal(0)))


@dataclass
class EnergyReport:
    """Per-layer energy of one forward pass (pJ), with every counted operation in ``rows[i].lines``."""

    rows: list[LayerEnergy]
    accounting: str
    table_name: str

    @property
    def total_pj(self) -> float:
        return float(sum((_exact(x) for r in self.rows for x in r.lines), Decimal(0)))

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def by_term(self) -> dict[str, float]:
        """pJ per term (mul, acc, bias, ...), over all layers; terms that cost nothing are left out."""
        out = {t: float(sum((_exact(x) for r in self.rows for x in r.lines if x.term == t), Decimal(0)))
               for t in TERMS}
        return {t: v for t, v in out.items() if v}

    def by_op(self) -> dict[str, tuple[int, float]]:
        """``{operation: (count, pJ)}`` over all layers (e.g. ``"int8 mul": (1280, 256.0)``)."""
        out: dict[str, tuple[int, Decimal]] = {}
        for r in self.rows:
            for x in r.lines:
                n, e = out.get(x.op, (0, Decimal(0)))
                out[x.op] = (n + x.count, e + _exact(x))
        return {k: (n, float(e)) for k, (n, e) in out.items()}

    def table(self) -> str:
        """Markdown: one row per layer, one column per term that costs something, then the total and share."""
        terms = list(self.by_term())
        total = self.total_pj or 1.0
        header = ["layer", "ops", "weights", "activations", "MACs", *(f"{t} pJ" for t in terms), "total pJ", "share"]
        rows = [[r.name or "(model)", ", ".join(r.ops), r.weight, r.activation, r.macs,
                 *(_pj(r.term_pj(t)) for t in terms), _pj(r.total_pj), f"{100 * r.total_pj / total:.1f}%"]
                for r in self.rows]
        rows.append(["**total**", "", "", "", self.macs, *(_pj(v) for v in self.by_term().values()),
                     _pj(self.total_pj), "100.0%"])
        return markdown_table(header, rows)

    def to_dict(self) -> dict[str, Any]:
        return {"accounting": self.accounting, "table": self.table_name, "total_pj": self.total_pj,
                "macs": self.macs, "by_term": self.by_term(),
                "layers": [{"name": r.name, "weight": r.weight, "activation": r.activation, "ops": r.ops,
                            "macs": r.macs, "total_pj": r.total_pj,
                            "lines": [{"term": x.term, "op": x.op, "count": x.count, "pj_each": x.pj_each,
                                       "pj": x.pj} for x in r.lines]} for r in self.rows]}


def _pj(v: float) -> str:
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.4g}"


# ---- counting -> priced lines ---------------------------------------------------------------------------------

def _pow2(schemes: list[Scheme]) -> bool:
    return all(s.storage.pow2 for s in schemes)


def _blocks(k: int, schemes: list[Scheme]) -> int:
    sizes = [s.granularity.size for s in schemes if isinstance(s.granularity, PerBlock)]
    return max(1, math.ceil(k / min(sizes))) if sizes and k else 1


def _lines(rec: OpRecord, plan: Plan | None, t: EnergyTable, accounting: str) -> list[TermLine]:
    if plan is None:
        sa = sb = None
    elif rec.weight:
        sa, sb = plan.activation, plan.weight
    else:  # activation x activation inside a planned layer (attention products): its activation scheme
        sa = sb = plan.activation
    dp: Datapath = datapath(t, sa.format if sa else None, sb.format if sb else None)
    schemes = [s for s in (sa, sb) if s is not None]
    out: list[TermLine] = []

    def add(term: str, op: Op | None, n: int) -> None:
        if op is not None and n > 0:
            out.append(TermLine(term, op.name, n, op.pj))

    # a layer's compute prices its weight products, an ops rule's the products it simulates
    compute = getattr(plan, "compute", None) if rec.weight or isinstance(plan, OpPlan) else None
    if compute is not None:
        bits = max([s.format.bits for s in schemes] or [32])
        dp, promote = compute_datapath(t, dp, compute, bits)
        chunk = compute.chunk or rec.k
        add("promote", promote, rec.outputs * math.ceil(rec.k / chunk))
    add("mul", dp.mul, rec.outputs * rec.k)
    add("acc", dp.acc, rec.outputs * (rec.k - 1))
    for op in dp.convert:
        add("convert", op, rec.outputs * rec.k)
    add("lookup", dp.lookup_a, rec.a_elems)
    add("lookup", dp.lookup_b, rec.b_elems)
    scaled = [s for s in schemes if s.has_scales]
    rescales = rescale_ops(t, dp, _pow2(scaled)) if scaled else ()
    if accounting == "lab":
        if schemes:
            add("bias", dp.narrow_add if rec.bias else None, rec.outputs)
            for op in rescales:
                add("rescale", op, rec.outputs)
        return out
    add("bias", dp.acc if rec.bias else None, rec.outputs)
    add("zero_point", dp.zp_add_a, rec.a_elems)
    add("zero_point", dp.zp_add_b, rec.b_elems)
    for op in rescales:
        add("rescale", op, rec.outputs * _blocks(rec.k, scaled))
    if plan is not None and getattr(plan, "dynamic", False) and sa is not None and sa.has_scales:
        add("dynamic_scale", priced(t, "fp32 add (absmax compare)", "add", "fp", 32), rec.a_elems)
        add("dynamic_scale", priced(t, "fp32 mul (apply scale)", "mul", "fp", 32), rec.a_elems)
    if not scaled:
        add("attn_scale", priced(t, "fp32 mul", "mul", "fp", 32), rec.scores)
    return out


def energy(model: nn.Module, config: Any, example: Any, table: EnergyTable | Mapping | str | None = None,
           accounting: str = "full") -> EnergyReport:
    """Trace one forward pass of ``model`` on ``example`` and price every multiply and add.

    Args:
        model: any ``nn.Module`` (not changed; run once under ``torch.no_grad``).
        config: a quantization config (dict, file path or ``QuantConfig``; ``None`` = FP32), as
            :func:`dtypelab.model.config.resolve` takes, or an already resolved ``{name: LayerPlan}``. Its
            ``ops:`` rules price the activation x activation products of the modules they match (the Q·Kᵀ
            and A·V of BERT and GPT-2 attention and of MultiheadAttention: ``operands`` and ``compute``).
        example: the forward input: a tensor, a tuple of positional arguments, or a dict of keyword arguments.
        table: an :class:`EnergyTable`, a dict or a YAML path (``None``: the lab's Horowitz 45 nm table).
        accounting: ``"full"`` (every term) or ``"lab"`` (exactly the lab's count).

    Returns:
        An :class:`EnergyReport` (``total_pj``, ``rows``, ``by_term()``, ``table()``).

    Example:
        >>> import torch, dtypelab as dl
        >>> r = dl.cost.energy(torch.nn.Linear(4, 2), {"weights": "int8/channel/absmax"}, example=torch.ones(1, 4))
        >>> [(x.term, x.op, x.count) for x in r.rows[0].lines]    # int8 weights meet fp32 inputs in fp32
        [('mul', 'fp32 mul', 8), ('acc', 'fp32 add', 6), ('bias', 'fp32 add', 2), ('rescale', 'fp32 mul', 2)]
    """
    if accounting not in ACCOUNTING:
        raise ValueError(f"accounting must be one of {', '.join(ACCOUNTING)}, got {accounting!r}")
    t = load_table(table)
    plans = resolve_plans(model, config)
    op_plans = resolve_op_plans(model, config)
    records = count(model, example, {name: p.module for name, p in plans.items()})
    rows: dict[str, LayerEnergy] = {}  # in the order layers first ran
    for rec in records:
        # an ops rule prices a module's activation x activation products (a MultiheadAttention's too)
        plan = op_plans.get(rec.layer) if not rec.weight else None
        plan = plan or (plans.get(rec.layer) if rec.planned else None)
        row = rows.get(rec.layer)
        if row is None:
            row = rows[rec.layer] = LayerEnergy(rec.layer, _label(plan.weight) if plan else "fp32",
                                                _label(plan.activation) if plan else "fp32")
        if rec.op not in row.ops:
            row.ops.append(rec.op)
        row.macs += rec.macs
        row.lines.extend(_lines(rec, plan, t, accounting))
    return EnergyReport([_merge(r) for r in rows.values()], accounting, t.name)


def _merge(row: LayerEnergy) -> LayerEnergy:
    """Sum lines of the same term and operation (a layer called many times, or the q/k/v projections)."""
    merged: dict[tuple[str, str, float], int] = {}
    for x in row.lines:
        key = (x.term, x.op, x.pj_each)
        merged[key] = merged.get(key, 0) + x.count
    row.lines = [TermLine(term, op, n, pj) for (term, op, pj), n in merged.items()]
    return row


def _label(s: Scheme | None) -> str:
    return "fp32" if s is None else str(s)
