"""``dtypelab cost --workload NAME --config FILE``: the per-layer energy and storage tables of a workload.

The CLI calls :func:`cost_command` and prints what it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from dtypelab.cost.energy import energy
from dtypelab.cost.storage import storage
from dtypelab.cost.table import load_table


def first_example(batch: Any) -> Any:
    """One example (batch of 1) from a calibration set: a tensor, a dict of tensors, a tuple, or an iterable."""
    if isinstance(batch, torch.Tensor):
        return batch[:1]
    if isinstance(batch, Mapping):
        one = {k: v[:1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        mask = one.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:  # drop the padding of the longer texts
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


def cost_command(workload: str, config: str | Mapping[str, Any] | None, table: str | None = None,
                 accounting: str = "full") -> str:
    """The text ``dtypelab cost`` prints: energy per example and storage, per layer, against FP32.

    Args:
        workload: a name for ``dtypelab.workloads.get`` (``"digits-vgg"``, ``"minilm"``).
        config: a quantization config (YAML/JSON/TOML path or dict); ``None`` = FP32.
        table: an energy table (YAML path); ``None`` = the lab's Horowitz 45 nm table.
        accounting: ``"full"`` or ``"lab"``.
    """
    from dtypelab import workloads

    wl = workloads.get(workload)
    model = wl.model()
    model.eval()
    example = first_example(wl.calibration())
    t = load_table(table)
    e = energy(model, config, example=example, table=t, accounting=accounting)
    e32 = energy(model, None, example=example, table=t, accounting=accounting)
    s = storage(model, config)
    name = config if isinstance(config, str) else "inline config" if config else "fp32"
    lines = [
        f"# {workload}: {name}",
        "",
        f"## Energy of one example ({accounting} accounting, table {t.name})",
        "",
        e.table(),
        "",
        "## Storage",
        "",
        s.table(),
        "",
        "## Totals",
        "",
        f"energy: {e.total_pj / 1e6:.4f} µJ per example (FP32 {e32.total_pj / 1e6:.4f} µJ; "
        f"{e32.total_pj / e.total_pj:.2f}x less)" if e.total_pj else "energy: 0 pJ",
        f"size:   {s.total_mb:.4f} MB (FP32 {s.fp32_bits / 8e6:.4f} MB; {s.compression:.2f}x smaller)",
    ]
    return "\n".join(lines)
