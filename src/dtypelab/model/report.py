"""The per-layer report of :func:`dtypelab.quantize_model`: printable (Markdown), JSON and CSV (written atomically).

Sizes are in MB = 10^6 bytes: quantized weights at their exact stored size (codes + scales + permutations,
as ``QTensor.storage_bits`` counts them), every other parameter at 32 bits; a tied weight is counted once.
Buffers (BatchNorm statistics ...) are not counted.

Example:
    >>> import torch, dtypelab as dl
    >>> m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 10))
    >>> r = dl.quantize_model(m, {"weights": "int8/channel/absmax", "layers": [{"match": "1", "weights": None}]})
    >>> [c.strip() for c in r.table().splitlines()[2].split("|")[1:7]]
    ['0', 'Linear', '4160', 'int8/channel/absmax', 'fp32', '8.500']
    >>> round(r.fp32_mb / r.size_mb, 2)
    2.67
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from dtypelab._io import atomic_write
from dtypelab._markdown import markdown_table

if TYPE_CHECKING:
    from dtypelab.model.config import LayerPlan
    from dtypelab.model.stats import TensorStats


@dataclass(frozen=True)
class LayerReport:
    """One layer's figures (weights: ``weight_*``; activation inputs on the calibration data: ``act_*``).

    ``*_binades`` maps e -> how many quantized nonzero values have floor(log2|q|) = e (q in the format's own
    units); ``*_scales`` summarises the chosen scales (count, min, median, max, log2 of min and max).
    """

    name: str
    type: str
    params: int
    weight_scheme: str | None = None
    activation_scheme: str | None = None
    activation_scales: str | None = None
    weight_bits_per_param: float | None = None
    weight_mse: float | None = None
    weight_sqnr_db: float | None = None
    weight_saturated: float | None = None
    weight_flushed: float | None = None
    weight_scales: dict[str, float] = field(default_factory=dict)
    weight_binades: dict[int, int] = field(default_factory=dict)
    act_mse: float | None = None
    act_sqnr_db: float | None = None
    act_saturated: float | None = None
    act_flushed: float | None = None
    act_scales: dict[str, float] = field(default_factory=dict)
    act_binades: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_stats(cls, plan: LayerPlan, params: int, weight: TensorStats | None,
                   act: TensorStats | None) -> LayerReport:
        kw: dict[str, Any] = {
            "name": plan.name, "type": plan.kind, "params": params,
            "weight_scheme": str(plan.weight) if plan.weight is not None else None,
            "activation_scheme": str(plan.activation) if plan.activation is not None else None,
            "activation_scales": ("dynamic" if plan.dynamic else "static") if plan.activation is not None else None,
        }
        if weight is not None and not weight.measured:
            kw.update(weight_bits_per_param=weight.bits_per_element)
        elif weight is not None:
            kw.update(weight_bits_per_param=weight.bits_per_element, weight_mse=weight.mse,
                      weight_sqnr_db=weight.sqnr_db, weight_saturated=weight.saturated, weight_flushed=weight.flushed,
                      weight_scales=weight.scale_summary(), weight_binades=weight.binades)
        if act is not None:
            kw.update(act_mse=act.mse, act_sqnr_db=act.sqnr_db, act_saturated=act.saturated, act_flushed=act.flushed,
                      act_scales=act.scale_summary(), act_binades=act.binades)
        return cls(**kw)


SCALAR_FIELDS = [f.name for f in fields(LayerReport) if f.name not in ("weight_scales", "weight_binades", "act_scales",
                                                                       "act_binades")]


@dataclass(frozen=True)
class QuantReport:
    """Per-layer reports (in module order) and the model's size against FP32."""

    layers: dict[str, LayerReport]
    fp32_mb: float
    size_mb: float

    @property
    def compression(self) -> float:
        """FP32 size / quantized size."""
        return self.fp32_mb / self.size_mb if self.size_mb else math.inf

    def table(self) -> str:
        """A Markdown table, one row per layer, then the totals."""
        header = ["layer", "type", "params", "weights", "activations", "bits/param", "W SQNR dB", "A SQNR dB",
                  "W sat %", "W flush %", "A sat %", "A flush %"]
        rows = []
        for r in self.layers.values():
            act = f"{r.activation_scheme} ({r.activation_scales})" if r.activation_scheme else "fp32"
            rows.append([r.name or "(model)", r.type, str(r.params), r.weight_scheme or "fp32", act,
                         _num(r.weight_bits_per_param, 3), _num(r.weight_sqnr_db, 1), _num(r.act_sqnr_db, 1),
                         _pct(r.weight_saturated), _pct(r.weight_flushed), _pct(r.act_saturated), _pct(r.act_flushed)])
        numeric = [False, False, True, False, False, True, True, True, True, True, True, True]
        total = (f"\n\n{len(self.layers)} layers, {sum(r.weight_scheme is not None for r in self.layers.values())} "
                 f"with quantized weights: {self.size_mb:.4f} MB against {self.fp32_mb:.4f} MB in FP32 "
                 f"({self.compression:.2f}x smaller)")
        return markdown_table(header, rows, numeric) + total

    def to_dict(self) -> dict[str, Any]:
        """Plain data (non-finite numbers as the strings "inf", "-inf", "nan")."""
        return _finite({"fp32_mb": self.fp32_mb, "size_mb": self.size_mb, "compression": self.compression,
                        "layers": [asdict(r) for r in self.layers.values()]})

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text; written atomically to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            atomic_write(path, text)
        return text

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """CSV, one row per layer (scale summaries and binade histograms as JSON cells); atomic if ``path``."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = [*SCALAR_FIELDS, "weight_scales", "weight_binades", "act_scales", "act_binades"]
        writer.writerow(cols)
        for r in self.to_dict()["layers"]:
            writer.writerow([json.dumps(r[c]) if isinstance(r[c], dict) else ("" if r[c] is None else r[c])
                             for c in cols])
        text = buf.getvalue()
        if path is not None:
            atomic_write(path, text)
        return text


def _num(v: float | None, digits: int) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if math.isfinite(v) else ("inf" if v > 0 else "-inf" if v < 0 else "nan")


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {(str(k) if not isinstance(k, str) else k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


__all__ = ["LayerReport", "QuantReport"]
