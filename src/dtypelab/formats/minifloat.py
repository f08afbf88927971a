"""Minifloats eXmY: IEEE-754-like ``fp(e,m)`` and the OCP finite variants (E4M3, E3M2, E2M3, E2M1).

``fp(e,m)`` has bias 2^(e-1)-1, subnormals, and its top exponent reserved for inf/NaN (so ``fp(5,2)`` is
E5M2, ``fp(8,7)`` bf16, ``fp(5,10)`` fp16). ``e4m3`` is OCP E4M3 (only S.1111.111 is NaN; max 448);
``e3m2``, ``e2m3``, ``e2m1`` have no inf or NaN at all. Quantizing rounds to nearest, ties to even,
saturates finite overflow at ±max; NaN stays NaN; ±inf stays ±inf where the format has it, else saturates.

Example:
    >>> import torch, dtypelab as dl
    >>> dl.fmt("e4m3").quantize(torch.tensor([0.1, 1000.0, -3.3])).tolist()
    [0.1015625, 448.0, -3.25]
    >>> str(dl.fmt("fp(5,10)")), dl.fmt("e5m2").max
    ('fp16', 57344.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from dtypelab.formats.base import Format

IEEE, FN, FINITE = "ieee", "fn", "finite"
OCP_FINITE = {(4, 3): FN, (3, 2): FINITE, (2, 3): FINITE, (2, 1): FINITE}


@dataclass(frozen=True, repr=False)
class Minifloat(Format):
    """Sign, ``e`` exponent bits, ``m`` mantissa bits; ``kind`` is ieee, fn (OCP E4M3) or finite."""

    e: int
    m: int
    kind: str = IEEE

    NAMES: ClassVar[dict[tuple[int, int, str], str]] = {
        (5, 2, IEEE): "e5m2", (8, 7, IEEE): "bf16", (5, 10, IEEE): "fp16",
        (4, 3, FN): "e4m3", (3, 2, FINITE): "e3m2", (2, 3, FINITE): "e2m3", (2, 1, FINITE): "e2m1",
    }

    def __post_init__(self) -> None:
        if self.kind == IEEE:
            if not (isinstance(self.e, int) and 2 <= self.e <= 8 and isinstance(self.m, int) and self.m >= 1
                    and 1 + self.e + self.m <= 16):
                raise ValueError(
                    f"fp(e,m): need integers 2 <= e <= 8, m >= 1 and 1+e+m <= 16 bits, got e={self.e!r}, "
                    f"m={self.m!r}")
        elif OCP_FINITE.get((self.e, self.m)) != self.kind:
            raise ValueError(f"no OCP {self.kind} minifloat e{self.e}m{self.m}; valid: e4m3, e3m2, e2m3, e2m1")

    @property
    def bits(self) -> int:
        return 1 + self.e + self.m

    @property
    def bias(self) -> int:
        return (1 << (self.e - 1)) - 1

    def __str__(self) -> str:
        return self.NAMES.get((self.e, self.m, self.kind), f"fp({self.e},{self.m})")

    @property
    def nan_code(self) -> int | None:
        if self.kind == IEEE:
            return ((1 << self.e) - 1) << self.m | 1 << (self.m - 1)
        return (1 << (self.bits - 1)) - 1 if self.kind == FN else None

    @property
    def inf_code(self) -> int | None:
        return ((1 << self.e) - 1) << self.m if self.kind == IEEE else None

    def code_values(self) -> np.ndarray:
        codes = np.arange(1 << self.bits, dtype=np.int64)
        exp = (codes >> self.m) & ((1 << self.e) - 1)
        man = codes & ((1 << self.m) - 1)
        normal = np.ldexp(1.0 + man / (1 << self.m), (exp - self.bias).astype(np.int32))
        subnormal = np.ldexp(man.astype(np.float64), 1 - self.bias - self.m)
        mag = np.where(exp == 0, subnormal, normal)
        top = exp == (1 << self.e) - 1
        if self.kind == IEEE:
            mag = np.where(top, np.where(man == 0, np.inf, np.nan), mag)
        elif self.kind == FN:
            mag = np.where(top & (man == (1 << self.m) - 1), np.nan, mag)
        return np.where(codes >> (self.bits - 1), -mag, mag)
