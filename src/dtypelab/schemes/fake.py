"""Fake quantization: quantize-dequantize in the input's dtype, with a straight-through gradient.

Example:
    >>> import torch, dtypelab as dl
    >>> x = torch.tensor([0.3, 5.0, -9.0], requires_grad=True)
    >>> y = dl.fake_quantize(x, "int4/tensor/absmax")
    >>> y.detach().tolist(), torch.autograd.grad(y.sum(), x)[0].tolist()
    ([0.0, 5.142857074737549, -9.0], [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import torch

from dtypelab.schemes.fused import fused
from dtypelab.schemes.scheme import Scheme


def fake_quantize(x: torch.Tensor, scheme: Scheme | str, scales: torch.Tensor | None = None,
                  zero_saturated_grad: bool = False) -> torch.Tensor:
    """``Q(x / s) * s`` per group, differentiable: the gradient passes straight through.

    ``scales`` (from ``scheme.compute_scales`` on calibration data) makes the scale static; by default it is
    computed from ``x`` itself (dynamic). With ``zero_saturated_grad`` the gradient of elements beyond the
    format's range is zero (as with a clipped STE).
    """
    scheme = Scheme.parse(scheme)
    if scales is None and not x.requires_grad:
        fast = fused(x, scheme, want_codes=False)
        if fast is not None:
            return fast[0].view(x.shape)
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    rows, layout = scheme.group(x.detach().to(work_dtype))
    s = scheme.row_scales(rows) if scales is None else scales.detach().reshape(-1).to(torch.float64)
    if s.numel() not in (1, rows.shape[0]):
        raise ValueError(f"scales hold {s.numel()} values but {scheme.granularity} makes {rows.shape[0]} groups "
                         f"of this tensor of shape {tuple(x.shape)}")
    s = s.to(device=rows.device, dtype=work_dtype)[:, None] if s.numel() > 1 else s.to(rows.device, work_dtype)
    if scales is None and scheme.scale == "none":  # s = 1: dividing and multiplying by it change nothing
        scaled = rows
        q = scheme.quantize_rows(rows)
    else:
        scaled = rows / s
        in_place = scaled.is_contiguous() and not zero_saturated_grad  # that path still needs `scaled`
        q = scheme.quantize_rows(scaled, out=scaled if in_place else None).mul_(s)
    q = scheme.granularity.ungroup(q, layout).to(x.dtype)
    if not x.requires_grad:
        return q
    if zero_saturated_grad:
        inside = scheme.granularity.ungroup((scaled.abs() <= scheme.element_range.max).to(x.dtype), layout)
        return x * inside + (q - x * inside).detach()
    return x + (q - x).detach()
