"""Codebook formats: any finite sorted value set, coded by index — NF4, the dynamic tree DT(n) and its unsigned
form UDT(n) (8-bit optimizers' second moment), or your own.

Rounding is to the nearest value, ties to the even index, saturating at both ends.

Example:
    >>> import torch, dtypelab as dl
    >>> dl.fmt("codebook(-1,0,0.5,1)").quantize(torch.tensor([0.2, 0.25, 0.8, 7.0])).tolist()
    [0.0, 0.5, 1.0, 1.0]
    >>> dl.fmt("dt8").values().shape, dl.fmt("dt8").max
    (torch.Size([256]), 1.0)
    >>> dl.fmt("udt8").values().shape, float(dl.fmt("udt8").values()[0])
    (torch.Size([256]), 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from dtypelab.formats.base import Format
from dtypelab.formats.registry import int_args, register_alias, register_family, register_pattern

NF4_VALUES = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)


class IndexedFormat(Format):
    """A format whose code is the index of its value in a sorted table (``table()``)."""

    def table(self) -> tuple[float, ...]:
        raise NotImplementedError

    @property
    def bits(self) -> int:
        return max(1, math.ceil(math.log2(len(self.table()))))

    def code_values(self) -> np.ndarray:
        values = np.full(1 << self.bits, np.nan)
        values[: len(self.table())] = self.table()
        return values


@dataclass(frozen=True, repr=False)
class Codebook(IndexedFormat):
    """``codebook(v1,v2,...)``: 2 to 65,536 distinct finite values."""

    entries: tuple[float, ...]

    def __post_init__(self) -> None:
        v = np.asarray(self.entries, dtype=np.float64)
        if not (2 <= len(v) <= 1 << 16) or not np.all(np.isfinite(v)) or np.any(np.diff(v) <= 0):
            raise ValueError("codebook(...) needs 2 to 65536 finite values in strictly increasing order, "
                             f"got {self.entries!r}")

    def table(self) -> tuple[float, ...]:
        return self.entries

    def __str__(self) -> str:
        return "codebook(" + ",".join(repr(float(v)) for v in self.entries) + ")"


@dataclass(frozen=True, repr=False)
class NF4(IndexedFormat):
    """QLoRA's 4-bit NormalFloat: 16 values in [-1, 1], used with an absmax scale."""

    def table(self) -> tuple[float, ...]:
        return NF4_VALUES

    def __str__(self) -> str:
        return "nf4"


@dataclass(frozen=True, repr=False)
class DynamicTree(IndexedFormat):
    """DT(n), n in 3..8: bitsandbytes' ``create_dynamic_map(signed=True, max_exponent_bits=n-1, total_bits=n)``.

    For i = 0..n-2, j = 0..2^i-1: ±10^(i-(n-2)) * mean of adjacent float32 ``linspace(0.1, 1, 2^i+1)``
    points, computed in float32 exactly as bitsandbytes does, plus 0 and +1.0.
    """

    n: int

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and 3 <= self.n <= 8):
            raise ValueError(f"dt(n): n must be an integer in 3..8, got {self.n!r}")

    def table(self) -> tuple[float, ...]:
        return _dynamic_tree(self.n)

    def __str__(self) -> str:
        return f"dt{self.n}"


@dataclass(frozen=True, repr=False)
class UnsignedDynamicTree(IndexedFormat):
    """UDT(n), n in 3..8: bitsandbytes' ``create_dynamic_map(signed=False, max_exponent_bits=n-1, total_bits=n)``,
    the code of 8-bit optimizers' second moment (which is never negative).

    The sign bit becomes one more fraction bit: for i = 0..n-2, 2^(i+1) values 10^(i-(n-2)) * mean of adjacent
    float32 ``linspace(0.1, 1, 2^(i+1)+1)`` points, plus 0 and +1.0: 2^n values in [0, 1]. Negative inputs round
    to 0.
    """

    n: int

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and 3 <= self.n <= 8):
            raise ValueError(f"udt(n): n must be an integer in 3..8, got {self.n!r}")

    def table(self) -> tuple[float, ...]:
        return _dynamic_tree(self.n, signed=False)

    def __str__(self) -> str:
        return f"udt{self.n}"


def _dynamic_tree(n: int, signed: bool = True) -> tuple[float, ...]:
    data: list[float] = [0.0, 1.0]
    for i in range(n - 1):
        bounds = torch.linspace(0.1, 1, 2 ** (i if signed else i + 1) + 1, dtype=torch.float32)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        level = (10 ** (i - (n - 2))) * means
        data += level.tolist() + ((-level).tolist() if signed else [])
    return tuple(sorted(data))


def _codebook(args: list[str]) -> Codebook:
    try:
        return Codebook(tuple(float(a) for a in args))
    except ValueError as err:
        raise ValueError(f"codebook: {err}") from None


def _dt(args: list[str]) -> DynamicTree:
    return DynamicTree(*int_args(args, 1, "dt"))


def _udt(args: list[str]) -> UnsignedDynamicTree:
    return UnsignedDynamicTree(*int_args(args, 1, "udt"))


register_family("dt", _dt, forms=("dt(n)",))
register_pattern(r"dt(\d+)", _dt, "dtN")
register_family("udt", _udt, forms=("udt(n)",))
register_pattern(r"udt(\d+)", _udt, "udtN")
register_family("nf4", lambda a: NF4(*int_args(a, 0, "nf4")), forms=("nf4()",))
register_alias("nf4", NF4())
register_family("codebook", _codebook, forms=("codebook(v1,v2,...)",))
