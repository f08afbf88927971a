"""Posit(n, es) — the Posit Standard (2022) word, rounded to nearest with ties to even on the bit pattern.

Example:
    >>> import torch, dtypelab as dl
    >>> p = dl.fmt("posit(8,1)")
    >>> p.quantize(torch.tensor([1.03125, 1.09375, 5000.0, 1e-9])).tolist()
    [1.0, 1.125, 4096.0, 0.000244140625]
    >>> p.encode(torch.tensor([1.0, -1.0])).tolist()
    [64, 192]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dtypelab.formats.base import TABLE_BITS, Format, _engine
from dtypelab.formats.registry import int_args, register_alias, register_family
from dtypelab.kernels import posit_closed
from dtypelab.kernels.engine import PositEngine
from dtypelab.kernels.rounding import DEFAULT, Rounding
from dtypelab.kernels.table import DOWN, UP, RoundingTable


@dataclass(frozen=True, repr=False)
class Posit(Format):
    """posit(n, es): n in 2..32, es in 0..4. NaR is NaN; ±inf become NaR."""

    n: int
    es: int

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and 2 <= self.n <= 32):
            raise ValueError(f"posit: n must be an integer in 2..32, got {self.n!r}")
        if not (isinstance(self.es, int) and 0 <= self.es <= 4):
            raise ValueError(f"posit: es must be an integer in 0..4, got {self.es!r}")

    inf_is_nan = True

    @property
    def bits(self) -> int:
        return self.n

    def __str__(self) -> str:
        return f"posit({self.n},{self.es})"

    @property
    def nan_code(self) -> int:
        return 1 << (self.n - 1)

    @property
    def max(self) -> float:  # type: ignore[override]
        return 2.0 ** ((self.n - 2) << self.es)

    @property
    def min_positive(self) -> float:  # type: ignore[override]
        return 2.0 ** -((self.n - 2) << self.es)

    @property
    def is_signed(self) -> bool:  # (no value table above 16 bits to read it from)
        return True

    def code_values(self) -> np.ndarray:
        return pattern_values(np.arange(1 << self.n, dtype=np.int64), self.n, self.es)

    def nearest_table(self) -> RoundingTable:
        signed, values = signed_patterns(self.n, self.code_values())
        mid_codes = (2 * signed[:-1] + 1) & ((1 << (self.n + 1)) - 1)
        thresholds = pattern_values(mid_codes, self.n + 1, self.es)
        tie = np.where(signed[1:] % 2 == 0, UP, DOWN).astype(np.int8)
        never_to_zero(signed, thresholds, tie)
        nar = (np.nan, self.nan_code)
        return RoundingTable.with_specials(values, signed & ((1 << self.n) - 1), thresholds, tie,
                                           nan=nar, pinf=nar, ninf=nar, exact_tie=thresholds != 0)

    def engine_for(self, rounding: Rounding | str | None):
        rounding = Rounding.parse(rounding)
        if self.n <= TABLE_BITS:
            return _engine(self, rounding)
        if rounding != DEFAULT:
            raise ValueError(f"{self}: posits wider than {TABLE_BITS} bits round to nearest, ties to even, only "
                             f"(got rounding {str(rounding)!r}); other modes need n <= {TABLE_BITS}")
        return PositEngine(self.n, self.es)

    def decode(self, codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.n <= TABLE_BITS:
            return super().decode(codes, dtype)
        c = self._checked_codes(codes, dtype).detach().to("cpu").contiguous()
        out = torch.empty(c.shape, dtype=torch.float64)
        posit_closed.decode(c.view(-1).numpy(), out.view(-1).numpy(), self.n, self.es)
        return out.to(codes.device, dtype)


def pattern_values(codes: np.ndarray, n: int, es: int) -> np.ndarray:
    """float64 values of n-bit posit patterns (exact: every posit of up to 32 bits fits a float64)."""
    out = np.empty(len(codes), dtype=np.float64)
    posit_closed.decode(np.ascontiguousarray(codes, dtype=np.int64), out, n, es)
    return out


def signed_patterns(n: int, code_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Patterns in value order as signed integers (NaR left out), and their values."""
    half = 1 << (n - 1)
    signed = np.arange(-half + 1, half, dtype=np.int64)
    return signed, code_values[signed & ((1 << n) - 1)]


def never_to_zero(signed: np.ndarray, thresholds: np.ndarray, tie: np.ndarray) -> None:
    """Make only an exact zero round to zero: the thresholds either side of zero become 0."""
    z = int(np.flatnonzero(signed == 0)[0])
    thresholds[z - 1], tie[z - 1] = 0.0, UP
    thresholds[z], tie[z] = 0.0, DOWN


register_family("posit", lambda a: Posit(*int_args(a, 2, "posit")), forms=("posit(n,es)",))
for _name, _spec in {"posit8": "posit(8,0)", "posit16": "posit(16,1)", "posit32": "posit(32,2)"}.items():
    register_alias(_name, _spec)
