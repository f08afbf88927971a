"""Format: the values a number format has and how to round to them.

A concrete format is a frozen dataclass that says, once, what every bit pattern means
(:meth:`Format.code_values`) and which rounding rule applies; everything else — the value table, max,
min_positive, and the fast exact engine — is derived from that.

Example:
    >>> import torch, dtypelab as dl
    >>> f = dl.fmt("e2m1")
    >>> f.quantize(torch.tensor([0.3, 2.6, 100.0])).tolist()
    [0.5, 3.0, 6.0]
    >>> f.values().tolist()
    [-6.0, -4.0, -3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property, lru_cache

import numpy as np
import torch

from dtypelab.kernels.engine import Engine, TableEngine, code_dtype
from dtypelab.kernels.rounding import DEFAULT, Rounding, stochastic_engine, table_for
from dtypelab.kernels.table import RoundingTable

TABLE_BITS = 16  # formats up to this width are served by a value table


class Format(ABC):
    """Base of every number format. Subclasses are frozen dataclasses with a canonical ``str``."""

    @property
    @abstractmethod
    def bits(self) -> int:
        """Width of one code in bits."""

    @abstractmethod
    def __str__(self) -> str:
        """Canonical spec, parsed back by ``dl.fmt``."""

    @abstractmethod
    def code_values(self) -> np.ndarray:
        """float64 value of every code ``0 .. 2**bits - 1`` (NaN for NaN codes, +-inf for infinities)."""

    @property
    def nan_code(self) -> int | None:
        """The code a NaN input encodes to, or None if the format has no NaN."""
        return None

    @property
    def inf_code(self) -> int | None:
        """The code of +inf, or None if infinities saturate (or become NaN, see ``inf_is_nan``)."""
        return None

    inf_is_nan = False  # posits: +-inf -> NaR

    @property
    def above_max(self) -> float | None:
        """The value past ``max`` on the format's grid continued upward (floats: max + its ulp), where overflow
        to infinity is decided (:mod:`dtypelab.kernels.rounding`); None: overflow is decided at max."""
        return None

    @property
    def min_normal(self) -> float | None:
        """The smallest normal magnitude of a format with subnormals (what ``daz`` / ``ftz`` flush below)."""
        return None

    def nearest_table(self) -> RoundingTable:
        """Nearest value, ties to the even code, saturating; signed zeros kept where the format has them."""
        return _midpoint_table(self)

    def rounding_table(self, rounding: Rounding | str | None = None) -> RoundingTable:
        """The table of a deterministic ``rounding`` (default: :meth:`nearest_table`)."""
        rounding = Rounding.parse(rounding)
        if rounding.stochastic:
            raise ValueError(f"{rounding} is stochastic: it has no single table (see Format.engine_for)")
        return self.nearest_table() if rounding == DEFAULT else table_for(self, rounding)

    # ---- derived ------------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"fmt({str(self)!r})"

    @property
    def engine(self) -> Engine:
        return self.engine_for(DEFAULT)

    def engine_for(self, rounding: Rounding | str | None) -> Engine:
        """The engine that rounds to this format under ``rounding`` (built once per format and rounding)."""
        return _engine(self, Rounding.parse(rounding))

    def values(self) -> torch.Tensor:
        """Every finite value, sorted, as a float64 tensor (zero once)."""
        if self.bits > TABLE_BITS:
            raise ValueError(f"{self}: values() is available for formats of at most {TABLE_BITS} bits")
        return torch.from_numpy(_finite_values(self).copy())

    @cached_property
    def max(self) -> float:
        """Largest finite value."""
        return float(_finite_values(self)[-1])

    @cached_property
    def min_positive(self) -> float:
        """Smallest positive value (NaN for a codebook with no positive value)."""
        v = _finite_values(self)
        pos = v[v > 0]
        return float(pos[0]) if pos.size else float("nan")

    @property
    def is_signed(self) -> bool:
        return float(_finite_values(self)[0]) < 0

    def quantize(self, x: torch.Tensor, out: torch.Tensor | None = None, *, rounding: Rounding | str | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Round every element of ``x`` to a value of the format (same shape and dtype): the nearest, ties to
        even, by default; else as ``rounding`` says (:mod:`dtypelab.kernels.rounding`: ``"rz"``, ``"sr8"``,
        ``"rne+ovfinf"`` ...), stochastic modes drawing their seed from ``generator``."""
        return self.engine_for(rounding).quantize(x, out, generator)

    def encode(self, x: torch.Tensor, out: torch.Tensor | None = None, *, rounding: Rounding | str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Bit patterns (uint8 up to 8 bits, int32 up to 31, else int64) of the rounded values."""
        codes, nans = self.engine_for(rounding).encode(x, out, generator)
        if self.nan_code is None and int(nans):  # (only here is a device's count read back)
            raise ValueError(f"{self} has no NaN code, but the input holds {int(nans)} NaN value(s)")
        return codes

    def decode(self, codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Values of integer ``codes`` (as produced by :meth:`encode`)."""
        c = self._checked_codes(codes, dtype)
        table = _decode_table_cached(self, dtype).to(codes.device)
        return table[c]

    def _checked_codes(self, codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``codes`` as int64 after the checks every ``decode`` makes: an integer tensor of codes in
        ``[0, 2**bits)`` and a floating output ``dtype`` (TypeError / ValueError otherwise)."""
        if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype.is_complex \
                or codes.dtype == torch.bool:
            raise TypeError(f"codes must be an integer tensor, got {getattr(codes, 'dtype', type(codes))}")
        if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(f"decode dtype must be a floating dtype, got {dtype}")
        c = codes.long()
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= 1 << self.bits):
            raise ValueError(f"{self}: codes must lie in [0, {(1 << self.bits) - 1}], got values in "
                             f"[{int(c.min())}, {int(c.max())}]")
        return c


def _midpoint_table(f: Format) -> RoundingTable:
    values = f.code_values()
    codes = np.arange(len(values), dtype=np.int64)
    keep = np.isfinite(values)
    values, codes = values[keep], codes[keep]
    order = np.lexsort((~np.signbit(values), values))  # by value; -0.0 before +0.0
    values, codes = values[order], codes[order]
    signed_zero = bool(np.any((values == 0) & np.signbit(values)))
    nan = (np.nan, f.nan_code) if f.nan_code is not None else None
    inf = f.inf_code
    pinf = (np.inf, inf) if inf is not None else None
    signed = bool(np.any(f.code_values() < 0))  # unsigned: -inf saturates to the lowest value, as negatives do
    ninf = (-np.inf, inf | (1 << (f.bits - 1))) if inf is not None and signed else None
    return RoundingTable.from_midpoints(values, codes, nan=nan, pinf=pinf, ninf=ninf, signed_zero=signed_zero)


@lru_cache(maxsize=128)
def _finite_values(f: Format) -> np.ndarray:
    if f.bits > TABLE_BITS:
        raise ValueError(f"{f}: no value table above {TABLE_BITS} bits")
    v = f.code_values()
    v = np.unique(v[np.isfinite(v)])  # unique also merges -0.0 and +0.0
    v[v == 0] = 0.0
    return v


@lru_cache(maxsize=256)
def _engine(f: Format, rounding: Rounding) -> Engine:
    if f.bits > TABLE_BITS:
        raise ValueError(f"{f}: formats wider than {TABLE_BITS} bits need their own engine")
    if not rounding.stochastic:
        return TableEngine(f.rounding_table(rounding), f.bits)
    return stochastic_engine(f, rounding)


@lru_cache(maxsize=128)
def _decode_table_cached(f: Format, dtype: torch.dtype) -> torch.Tensor:
    return torch.from_numpy(f.code_values()).to(dtype)


__all__ = ["Format", "TABLE_BITS", "code_dtype"]
