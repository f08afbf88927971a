"""Simulated arithmetic: products, accumulators (formats, the quire, the tensor-core model, fixed point) and
the rounding of every op of a model (:mod:`dtypelab.arith.compute`, :mod:`dtypelab.arith.ops`).

Example:
    >>> import torch
    >>> from dtypelab.arith import Compute
    >>> a, b = torch.ones(1, 4096, dtype=torch.float64), torch.ones(4096, 1, dtype=torch.float64)
    >>> Compute.parse({"accumulator": "fp16"}).matmul(a, b).item()   # adding 1 at a time: fp16 stops at 2048
    2048.0
    >>> Compute.parse({"accumulator": "quire", "output": "fp16"}).matmul(a, b).item()
    4096.0
"""

from dtypelab.arith.compute import ACCUMULATORS, Align, Compute, Fixed, FormatAcc, Quire, accumulator
from dtypelab.arith.exact import exact_matmul, sum_to_odd
from dtypelab.arith.numbers import Rounder, rounder

__all__ = ["Compute", "FormatAcc", "Quire", "Align", "Fixed", "accumulator", "ACCUMULATORS", "exact_matmul",
           "sum_to_odd", "Rounder", "rounder"]
