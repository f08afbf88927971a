"""The fast path of block scaling: one fused kernel (:mod:`dtypelab.kernels.blockwise`) instead of the generic
group -> scale -> divide -> round steps, for CPU float32 tensors whose groups are contiguous (``block:N``, or
``channel`` on axis 0) and whose scale rule is a closed form of the group's absmax (``none``, ``absmax`` with
fp32 scales, ``mx``). Bit-identical to the generic path (tests compare them).

Example:
    >>> import torch
    >>> from dtypelab.schemes import Scheme
    >>> codes, scales = fused(torch.randn(4, 64), Scheme.parse("mxfp8"), want_codes=True)
    >>> codes.dtype, scales.shape
    (torch.uint8, torch.Size([8]))
"""

from __future__ import annotations

import numpy as np
import torch

from dtypelab.kernels import blockwise
from dtypelab.kernels.engine import TableEngine, code_dtype
from dtypelab.schemes.scheme import Scheme

_RULES = {"none": blockwise.RULE_NONE, "absmax": blockwise.RULE_ABSMAX, "mx": blockwise.RULE_MX}
MAX_GROUP = 1 << 16  # larger groups gain nothing from fusing (one group is one work item)


def _group_size(x: torch.Tensor, scheme: Scheme) -> int | None:
    g = scheme.granularity
    if g.kind == "block":
        return g.size
    if g.kind == "channel" and g.axis == 0 and x.dim() >= 1 and x.shape[0] > 0:
        return x.numel() // x.shape[0]
    return None


def fused(x: torch.Tensor, scheme: Scheme, want_codes: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(codes or fake-quantized values, stored scales as float64)`` for flattened ``x``, or None where the
    fast path does not apply (the caller then takes the generic path)."""
    size = _group_size(x, scheme)
    engine = scheme.format.engine
    if (size is None or not 0 < size <= MAX_GROUP or x.device.type != "cpu" or x.dtype != torch.float32
            or scheme.scale not in _RULES or not isinstance(engine, TableEngine)
            or (scheme.scale == "absmax" and scheme.scale_format != "fp32") or x.requires_grad and not want_codes):
        return None
    rng = scheme.element_range
    flat = x.detach().contiguous().view(-1)
    out = torch.empty(flat.numel(), dtype=code_dtype(engine.bits) if want_codes else torch.float32)
    scales = torch.empty((flat.numel() + size - 1) // size, dtype=torch.float32)
    if want_codes:
        arrays = engine.lookup_arrays(np.float32, engine._codes, "code")
    else:  # values less the zero point, as the kernel would subtract it in float32
        zp = np.float32(rng.zero_point)
        arrays = engine.lookup_arrays(np.float32, engine.table.float32_values - zp, f"float32 - {zp}")
    m = engine.lut(np.float32)
    nan_blocks = blockwise.KERNELS[m.form](flat.numpy(), size, _RULES[scheme.scale], float(rng.max),
                                           rng.emax if scheme.scale == "mx" else 0, float(rng.unit),
                                           float(rng.zero_point), scheme.scale == "mx", not want_codes, out.numpy(),
                                           scales.numpy(), m.low_bits, arrays)
    if want_codes and scheme.format.nan_code is None:
        if nan_blocks or bool(scales.isnan().any()):
            raise ValueError(f"{scheme.format} has no NaN code, but the input holds NaN value(s)")
    return out, scales.double()
