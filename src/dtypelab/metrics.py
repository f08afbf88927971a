"""Quantization error metrics — seed 002's ``measure_quantization_error``, done properly.

Example:
    >>> import torch, dtypelab as dl
    >>> x = torch.tensor([1.0, 2.0, 1e-9, 100.0])
    >>> m = dl.metrics.quantization_error(x, "int4")
    >>> m["mse"], m["fraction_saturated"], m["fraction_flushed"]
    (2162.25, 0.25, 0.25)
"""

from __future__ import annotations

import math

import torch

from dtypelab.schemes import Scheme, fake_quantize


def error_stats(x: torch.Tensor, q: torch.Tensor) -> dict[str, float]:
    """MAE, MSE, SQNR (dB), max abs error and relative error (||x-q|| / ||x||) between ``x`` and ``q``."""
    x64, q64 = x.detach().double().reshape(-1), q.detach().double().reshape(-1)
    if x64.numel() == 0:
        raise ValueError("cannot measure the error of an empty tensor")
    err = q64 - x64
    signal, noise = float((x64 * x64).sum()), float((err * err).sum())
    return {
        "mae": float(err.abs().mean()),
        "mse": float((err * err).mean()),
        "sqnr_db": 10 * math.log10(signal / noise) if noise > 0 else math.inf,
        "max_abs_error": float(err.abs().max()),
        "relative_error": math.sqrt(noise / signal) if signal > 0 else (0.0 if noise == 0 else math.inf),
    }


def quantization_error(x: torch.Tensor, scheme: Scheme | str, scales: torch.Tensor | None = None
                       ) -> dict[str, float]:
    """Error stats of fake-quantizing ``x`` under ``scheme``, plus the fraction of elements saturated
    (beyond the format's range after scaling) and flushed (nonzero, quantized to zero)."""
    scheme = Scheme.parse(scheme)
    q = fake_quantize(x.detach(), scheme, scales=scales)
    stats = error_stats(x, q)
    scaled = scheme.scale(x.detach().double(), scales).scaled()
    n = x.numel()
    stats["fraction_saturated"] = float((scaled.abs() > scheme.element_range.max).sum()) / n
    stats["fraction_flushed"] = float(((x != 0) & (q == 0)).sum()) / n
    return stats
