"""One evaluation of a workload under one config: :func:`evaluate` -> :class:`Outcome`.

Every experiment (the sweep, the search, ``dtypelab quantize`` and ``dtypelab cost``) measures a model here:
the workload's metrics, the stored bits per quantized weight (scales included), the model's size, the mean
weight MSE, and the energy of one forward pass on the one example :func:`example_batch` chooses.

Example:
    >>> import torch
    >>> from dtypelab.workloads import load_user
    >>> w = load_user(model=lambda: torch.nn.Linear(64, 4), evaluate=lambda m: 1.0, primary_metric="score",
    ...               calib=lambda: [torch.ones(8, 64)])
    >>> o = evaluate(w, {"weights": "int8/tensor/absmax", "activations": "int8/tensor/absmax",
    ...                  "activation_scales": "dynamic"})
    >>> o.primary, o.bits_per_weight, o.energy_pj < evaluate(w, None).energy_pj
    (1.0, 8.125, True)
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Outcome", "evaluate", "example_batch", "first_example", "cost_breakdown", "CostBreakdown"]


@dataclass(frozen=True)
class Outcome:
    """What one evaluation measured. ``report`` is the per-layer quantization report (None for FP32)."""

    metrics: dict[str, float]
    primary_metric: str
    bits_per_weight: float
    size_mb: float
    fp32_size_mb: float
    weight_mse: float
    seconds: float
    energy_pj: float | None = None
    report: Any = field(default=None, compare=False, repr=False)

    @property
    def primary(self) -> float:
        return self.metrics[self.primary_metric]


def first_example(batch: Any) -> Any:
    """One example (batch of 1) from a calibration set: a tensor, a dict of tensors, a tuple, or an iterable.

    A dict's padding (``attention_mask`` zeros beyond the example's length) is dropped: it is one example's work.

    >>> import torch
    >>> first_example([{"input_ids": torch.ones(2, 5), "attention_mask": torch.tensor([[1, 1, 0, 0, 0]] * 2)}])
    {'input_ids': tensor([[1., 1.]]), 'attention_mask': tensor([[1, 1]])}
    """
    import torch

    if isinstance(batch, torch.Tensor):
        return batch[:1]
    if isinstance(batch, Mapping):
        one = {k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        mask = one.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            n = max(1, int(mask.sum()))
            one = {k: v[:, :n] if isinstance(v, torch.Tensor) and v.dim() == 2 and v.shape == mask.shape else v
                   for k, v in one.items()}
        return one
    if isinstance(batch, tuple) and batch and all(isinstance(v, torch.Tensor) for v in batch):
        return batch[0][:1]  # (inputs, labels)
    if isinstance(batch, Iterable) and not isinstance(batch, str | bytes):
        for item in batch:
            return first_example(item)
    raise ValueError(f"cannot take an example from a calibration set of type {type(batch).__name__}")


def example_batch(workload: Any) -> Any:
    """The one example every energy figure is measured on: the first of the workload's first calibration batch."""
    return first_example(workload.calibration(1))


def evaluate(workload: Any, config: Mapping[str, Any] | Any | None, *, limit: int | None = None,
             calibration: Iterable[Any] | None = None, energy: bool = True) -> Outcome:
    """Quantize a fresh copy of ``workload``'s model by ``config`` (``None``: FP32) and measure it.

    Args:
        workload: a :class:`dtypelab.workloads.Workload` (or anything with ``model``, ``evaluate``,
            ``calibration``, ``name`` and ``primary_metric``).
        config: as :func:`dtypelab.quantize_model` takes it.
        limit: evaluate on the first ``limit`` test items.
        calibration: batches for static activation scales (and the report's activation error).
        energy: also price one forward pass on :func:`example_batch` (the lab's table, full accounting).
    """
    import torch

    from dtypelab.model import quantize_model

    start = time.perf_counter()
    model = workload.model()
    if config is None:
        metrics = workload.evaluate(model, limit=limit)
        fp32_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
        bits, size_mb, mse, report = 32.0, fp32_mb, 0.0, None
    else:
        report = quantize_model(model, config, calibration=calibration)
        with torch.no_grad():
            metrics = workload.evaluate(model, limit=limit)
        fp32_mb, size_mb = report.fp32_mb, report.size_mb
        bits, mse = _weight_summary(report, model)
    seconds = time.perf_counter() - start
    energy_pj = _energy_pj(workload, config) if energy else None
    return Outcome(metrics, workload.primary_metric, bits, size_mb, fp32_mb, mse, seconds, energy_pj, report)


def _energy_pj(workload: Any, config: Any) -> float:
    from dtypelab.cost import energy

    return float(energy(workload.model(), config, example=example_batch(workload)).total_pj)


def _weight_summary(report: Any, model: Any) -> tuple[float, float]:
    """(stored bits per quantized weight element, element-weighted mean weight MSE) of a quantized model."""
    from dtypelab.model.layers import kind_of, raw_weight

    quantized = [r for r in report.layers.values() if r.weight_scheme is not None]
    numel = {}
    for r in quantized:
        module = model.get_submodule(r.name)
        numel[r.name] = sum(raw_weight(o, a).numel() for o, a in kind_of(module).weights(module))
    total = max(sum(numel.values()), 1)
    bits = sum(r.weight_bits_per_param * numel[r.name] for r in quantized) / total
    return bits, sum(r.weight_mse * numel[r.name] for r in quantized) / total


@dataclass(frozen=True)
class CostBreakdown:
    """Energy of one example under the config and in FP32, and the storage, per layer (``dtypelab cost``)."""

    energy: Any
    fp32_energy: Any
    storage: Any


def cost_breakdown(workload: Any, config: Any, table: Any = None, accounting: str = "full") -> CostBreakdown:
    """Per-layer energy (on :func:`example_batch`) and storage of ``workload``'s model under ``config``."""
    from dtypelab.cost import energy, load_table, storage

    model = workload.model()
    example = example_batch(workload)
    t = load_table(table)
    return CostBreakdown(energy(model, config, example=example, table=t, accounting=accounting),
                         energy(model, None, example=example, table=t, accounting=accounting),
                         storage(model, config))
