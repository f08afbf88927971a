"""Storage: the exact bits a quantized model takes, layer by layer.

A quantized weight takes ``dl.quantize(weight, scheme).storage_bits`` (codes + scales + any permutation,
see :class:`dtypelab.schemes.QTensor`); every other parameter — FP32 weights, biases, norms — takes its
dtype's width per element. Tied weights are counted once. Buffers (BatchNorm running statistics) are not
parameters and are left out, as in ``dl.quantize_model``'s report, whose ``size_mb`` this total equals.
MB are 10^6 bytes.

Example:
    >>> import torch, dtypelab as dl
    >>> m = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    >>> r = dl.cost.storage(m, {"weights": "int8/channel/absmax"})
    >>> [(row.name, row.weight_bits, row.other_bits) for row in r.rows]
    [('0', 17408, 1024), ('2', 2880, 320)]
    >>> round(r.compression, 3)       # FP32 bits / these bits
    3.565
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dtypelab._markdown import markdown_table
from dtypelab.cost.plans import resolve_plans
from dtypelab.model.layers import kind_of, raw_weight
from dtypelab.schemes import quantize

REST = "(rest: parameters outside the layers)"


@dataclass(frozen=True)
class LayerStorage:
    """One layer: its weights' scheme, element count and bits; ``other_bits`` are its biases and the like."""

    name: str
    scheme: str
    weight_elems: int
    weight_bits: int
    other_elems: int
    other_bits: int

    @property
    def total_bits(self) -> int:
        return self.weight_bits + self.other_bits

    @property
    def bits_per_weight(self) -> float:
        return self.weight_bits / self.weight_elems if self.weight_elems else 0.0


@dataclass(frozen=True)
class StorageReport:
    """Per-layer storage; the last row (if any) holds what lies outside every quantizable layer."""

    rows: list[LayerStorage]
    fp32_bits: int  # the same model with every float tensor at 32 bits

    @property
    def total_bits(self) -> int:
        return sum(r.total_bits for r in self.rows)

    @property
    def weight_bits(self) -> int:
        return sum(r.weight_bits for r in self.rows)

    @property
    def total_mb(self) -> float:
        return self.total_bits / 8e6

    @property
    def compression(self) -> float:
        return self.fp32_bits / self.total_bits if self.total_bits else 1.0

    def table(self) -> str:
        header = ["layer", "weights", "weight elems", "bits/weight", "weight bits", "other bits", "total MB"]
        rows: list[list[Any]] = [[r.name, r.scheme, r.weight_elems, f"{r.bits_per_weight:.3f}", r.weight_bits,
                                  r.other_bits, f"{r.total_bits / 8e6:.4f}"] for r in self.rows]
        rows.append(["**total**", "", sum(r.weight_elems for r in self.rows), "", self.weight_bits,
                     sum(r.other_bits for r in self.rows), f"{self.total_mb:.4f}"])
        return markdown_table(header, rows)

    def to_dict(self) -> dict[str, Any]:
        return {"total_bits": self.total_bits, "total_mb": self.total_mb, "fp32_bits": self.fp32_bits,
                "compression": self.compression,
                "layers": [{"name": r.name, "scheme": r.scheme, "weight_elems": r.weight_elems,
                            "weight_bits": r.weight_bits, "other_elems": r.other_elems, "other_bits": r.other_bits}
                           for r in self.rows]}


def _bits(t: torch.Tensor) -> int:
    return t.numel() * t.element_size() * 8


def storage(model: nn.Module, config: Any) -> StorageReport:
    """Bits of every layer's weights under ``config`` (as :func:`dtypelab.model.config.resolve` takes it), plus
    the rest of the model's parameters at their own width.

    Quantized weights count exactly ``dl.quantize(weight, scheme).storage_bits``.
    """
    plans = resolve_plans(model, config)
    seen: set[int] = set()
    rows: list[LayerStorage] = []
    fp32 = 0
    for name, plan in plans.items():
        kind = kind_of(plan.module)
        w_elems = w_bits = 0
        for owner, attr in (kind.weights(plan.module) if kind is not None else []):
            t = raw_weight(owner, attr)
            if id(t) in seen:
                continue  # tied: stored once
            seen.add(id(t))
            w_elems += t.numel()
            w_bits += quantize(t.detach(), plan.weight).storage_bits if plan.weight is not None else _bits(t)
            fp32 += 32 * t.numel() if t.is_floating_point() else _bits(t)
        o_elems = o_bits = 0
        for t in plan.module.parameters():
            if id(t) in seen:
                continue
            seen.add(id(t))
            o_elems += t.numel()
            o_bits += _bits(t)
            fp32 += 32 * t.numel() if t.is_floating_point() else _bits(t)
        rows.append(LayerStorage(name, "fp32" if plan.weight is None else str(plan.weight), w_elems, w_bits,
                                 o_elems, o_bits))
    rest = [t for t in model.parameters() if id(t) not in seen]
    if rest:
        rows.append(LayerStorage(REST, "fp32", 0, 0, sum(t.numel() for t in rest), sum(_bits(t) for t in rest)))
        fp32 += sum(32 * t.numel() if t.is_floating_point() else _bits(t) for t in rest)
    return StorageReport(rows, fp32)
