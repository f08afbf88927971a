"""Integers: ``int(n)`` (two's complement, range [-2^(n-1), 2^(n-1)-1]) and ``uint(n)``; ties to even, clipped.

Example:
    >>> import torch, dtypelab as dl
    >>> dl.fmt("int8").quantize(torch.tensor([2.5, 3.5, -300.0, 127.4])).tolist()
    [2.0, 4.0, -128.0, 127.0]
    >>> dl.fmt("int8").encode(torch.tensor([-1.0])).tolist()
    [255]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dtypelab.formats.base import Format
from dtypelab.formats.registry import int_args, register_family, register_pattern


@dataclass(frozen=True, repr=False)
class Integer(Format):
    """``n``-bit integer, signed (two's complement codes) or unsigned; n in 2..16."""

    n: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and 2 <= self.n <= 16):
            raise ValueError(f"int(n)/uint(n): n must be an integer in 2..16, got {self.n!r}")

    @property
    def bits(self) -> int:
        return self.n

    def __str__(self) -> str:
        return f"{'int' if self.signed else 'uint'}{self.n}"

    def code_values(self) -> np.ndarray:
        codes = np.arange(1 << self.n, dtype=np.int64)
        if self.signed:
            codes = np.where(codes >= 1 << (self.n - 1), codes - (1 << self.n), codes)
        return codes.astype(np.float64)


def _int(args: list[str]) -> Integer:
    return Integer(*int_args(args, 1, "int"), True)


def _uint(args: list[str]) -> Integer:
    return Integer(*int_args(args, 1, "uint"), False)


register_family("int", _int, forms=("int(n)",))
register_family("uint", _uint, forms=("uint(n)",))
register_pattern(r"int(\d+)", _int, "intN")
register_pattern(r"uint(\d+)", _uint, "uintN")
