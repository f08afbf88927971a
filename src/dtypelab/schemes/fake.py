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

from dtypelab.schemes.scheme import Scheme


def fake_quantize(x: torch.Tensor, scheme: Scheme | str, scales: torch.Tensor | None = None,
                  zero_saturated_grad: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """``Q(x / s) * s`` per group, differentiable: the gradient passes straight through.

    ``scales`` (from ``scheme.compute_scales`` on calibration data) makes the scale static; by default it is
    computed from ``x`` itself (dynamic). With ``zero_saturated_grad`` the gradient of elements beyond the
    format's range is zero (as with a clipped STE). A scheme with stochastic rounding (``.../sr8``) draws its
    random bits from ``generator`` (default: torch's global one).
    """
    scheme = Scheme.parse(scheme)
    scaled = scheme.scale(x, scales, generator)
    q = scaled.dequantize()
    if not x.requires_grad:
        return q
    if zero_saturated_grad:
        inside = (scaled.scaled().abs() <= scheme.element_range.max).to(x.dtype)
        inside = scheme.granularity.ungroup(inside, scaled.layout)
        return x * inside + (q - x * inside).detach()
    return x + (q - x).detach()
