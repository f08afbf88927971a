"""Engines: the tensor-level entry points (quantize / encode / decode) that formats delegate to.

:class:`TableEngine` serves every format of at most 16 bits, in every deterministic rounding mode, from its
:class:`RoundingTable`; :class:`StochasticEngine` serves the stochastic modes from a truncating table and
counter-based random bits; :class:`PositEngine` serves wider posits with the closed form of posit rounding
(nearest even only). All take torch tensors
of float16, bfloat16, float32 or float64 on any device, and apply themselves through the backend of the
tensor's device (:mod:`dtypelab.kernels.backend`): numba kernels on the CPU, the torch reference elsewhere.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from dtypelab.kernels import lut
from dtypelab.kernels.backend import Backend, BlockRule, backend_for
from dtypelab.kernels.random import draw_seed
from dtypelab.kernels.stochastic import entry_tables, pow2_entries, remainder_tables
from dtypelab.kernels.table import RoundingTable

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_NUMPY_CODE = {torch.uint8: np.uint8, torch.int32: np.int32, torch.int64: np.int64}


def code_dtype(bits: int) -> torch.dtype:
    """Integer dtype that holds an unsigned ``bits``-bit pattern: uint8, int32 or int64."""
    return torch.uint8 if bits <= 8 else torch.int32 if bits <= 31 else torch.int64


def check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"expected a floating tensor (float16, bfloat16, float32, float64), got {x.dtype}")
    if x.device.type == "meta":
        raise ValueError("cannot round a tensor on the meta device (it has a shape but no values): materialize it "
                         "first (e.g. module.to_empty(device='cpu'), then load_state_dict)")


def prepare_out(x: torch.Tensor, out: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    if out is None:
        return torch.empty(x.shape, dtype=dtype, device=x.device)
    if out.shape != x.shape or out.dtype != dtype or out.device != x.device or not out.is_contiguous():
        raise ValueError(
            f"out must be a contiguous {dtype} tensor of shape {tuple(x.shape)} on {x.device}; "
            f"got {out.dtype} {tuple(out.shape)} on {out.device}"
        )
    return out


class Engine:
    """Shared tensor plumbing: checks the input and the output, then hands both to the device's backend
    (:func:`dtypelab.kernels.backend.backend_for`) through ``_apply``."""

    bits: int

    @property
    def code_dtype(self) -> torch.dtype:
        return code_dtype(self.bits)

    def quantize(self, x: torch.Tensor, out: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` rounded (``generator``: where stochastic engines draw their seed; deterministic ones ignore it)."""
        check_input(x)
        out = prepare_out(x, out, x.dtype)
        self._apply(backend_for(x.device), x.detach(), out, "value", generator)
        return out

    def encode(self, x: torch.Tensor, out: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, int | torch.Tensor]:
        """Codes of ``x`` and the number of NaN inputs seen (an int, or a 0-d tensor on ``x``'s device)."""
        check_input(x)
        out = prepare_out(x, out, self.code_dtype)
        return out, self._apply(backend_for(x.device), x.detach(), out, "code", generator)

    def block(self, x: torch.Tensor, size: int, rule: BlockRule, want_codes: bool,
              given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor] | None:
        """Fused block scaling where the device's backend has a kernel for it (see :meth:`Backend.block`)."""
        return None

    def _apply(self, backend: Backend, x: torch.Tensor, out: torch.Tensor, what: str,
               generator: torch.Generator | None) -> int | torch.Tensor:
        raise NotImplementedError


class TableEngine(Engine):
    """Exact rounding to a finite value set described by a :class:`RoundingTable`."""

    def __init__(self, table: RoundingTable, bits: int):
        self.table = table
        self.bits = bits
        self._luts: dict[np.dtype, lut.Lut] = {}
        self._outputs: dict[tuple[np.dtype, str], lut.Outputs] = {}

    def lut(self, dtype: np.dtype) -> lut.Lut:
        """The lookup table for ``float32`` or ``float64`` inputs (built on first use)."""
        dtype = np.dtype(dtype)
        found = self._luts.get(dtype)
        if found is None:
            found = self._luts[dtype] = lut.choose_lut(self.table, dtype)
        return found

    @cached_property
    def codes(self) -> np.ndarray:
        """The table's codes in the dtype :meth:`encode` returns."""
        return self.table.codes.astype(_NUMPY_CODE[code_dtype(self.bits)])

    @cached_property
    def flagged_codes(self) -> np.ndarray:
        """The codes as int32 with the NaN interval flagged (:func:`lut.flagged_codes`): what the CPU's encode
        kernels look up, counting NaN inputs as they go."""
        return lut.flagged_codes(self.table.codes, self.table.nan_index)

    def outputs(self, dtype: np.dtype, table: np.ndarray, name: str) -> lut.Outputs:
        """:func:`lut.outputs` of ``table`` (results by interval, cached under ``name``) for ``dtype`` inputs."""
        key = (np.dtype(dtype), name)
        found = self._outputs.get(key)
        if found is None:
            found = self._outputs[key] = lut.outputs(self.lut(dtype), table)
        return found

    def lookup_arrays(self, dtype: np.dtype, table: np.ndarray, name: str) -> tuple[np.ndarray, ...]:
        """The ``lut_arrays`` argument of :func:`lut.lookup`, writing ``table``."""
        m, o, t = self.lut(dtype), self.outputs(dtype, table, name), self.table
        return (m.first, m.cut_or_empty, m.entries, m.fallback_first, m.fallback_span, t.thresholds, t.tie, o.table,
                o.first)

    def _apply(self, backend: Backend, x: torch.Tensor, out: torch.Tensor, what: str,
               generator: torch.Generator | None) -> int | torch.Tensor:
        return backend.table(self, x, out, what)

    def block(self, x: torch.Tensor, size: int, rule: BlockRule, want_codes: bool,
              given: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, int | torch.Tensor] | None:
        return backend_for(x.device).block(self, x, size, rule, want_codes, given)


class PositEngine(Engine):
    """Closed-form posit rounding (RNE on the bit pattern) for posits of 17 to 32 bits."""

    def __init__(self, n: int, es: int):
        self.bits, self.es = n, es

    def _apply(self, backend: Backend, x: torch.Tensor, out: torch.Tensor, what: str,
               generator: torch.Generator | None) -> int | torch.Tensor:
        return backend.posit(self, x, out, what)


class StochasticEngine(Engine):
    """Stochastic rounding (:mod:`dtypelab.kernels.stochastic`): ``index`` looks up the toward-zero neighbour,
    ``positions`` place each of its sorted intervals for the remainder, ``results`` says what each interval writes
    (values and codes, after any flushing), with ``random_bits`` compared bits and inputs below ``flush_below``
    taken as zeros."""

    def __init__(self, truncating: RoundingTable, results: RoundingTable, positions: np.ndarray, bits: int,
                 random_bits: int, flush_below: float = 0.0):
        self.bits = bits
        self.index = TableEngine(truncating, bits)
        self.results = results
        self.base, self.inverse = remainder_tables(positions, len(results.values))
        self.random_bits = random_bits
        self.flush_below = float(flush_below)
        self.codes = results.codes.astype(_NUMPY_CODE[code_dtype(bits)])
        self._entries: dict[tuple[np.dtype, str], tuple[np.ndarray, ...]] = {}

    def entry_arrays(self, dtype: np.dtype, results: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
        """For a direct- or cut-form lookup of ``dtype`` inputs, the per-entry ``base``, ``inverse`` and
        ``results`` (by interval, cached under ``name``) of :func:`dtypelab.kernels.stochastic.entry_tables`."""
        key = (np.dtype(dtype), name)
        found = self._entries.get(key)
        if found is None:
            m = self.index.lut(dtype)
            key_bits = 8 * np.dtype(dtype).itemsize - m.low_bits
            base, inverse, neighbours = entry_tables(self.index_arrays(dtype)[8], key_bits, self.base, self.inverse)
            found = self._entries[key] = (base, inverse, results[neighbours])
        return found

    def index_arrays(self, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """The lookup arrays of the truncating table, writing interval indices."""
        intervals = np.arange(len(self.results.values), dtype=np.int32)
        return self.index.lookup_arrays(dtype, intervals, "index")

    @cached_property
    def pow2_words(self) -> np.ndarray | None:
        """The table of the integer kernel for float32 inputs (:func:`dtypelab.kernels.stochastic.pow2_entries`),
        or None where it does not apply."""
        m = self.index.lut(np.dtype(np.float32))
        if m.form != lut.DIRECT:
            return None
        return pow2_entries(self.index_arrays(np.dtype(np.float32))[8], m.low_bits, self.base, self.inverse,
                            self.random_bits)

    @cached_property
    def flush_bits(self) -> int:
        """The float32 bit pattern of the least float32 magnitude that is not flushed (0: none is)."""
        if self.flush_below == 0:
            return 0
        below = np.float32(self.flush_below)
        below = below if below >= self.flush_below else np.nextafter(below, np.float32(np.inf))
        return int(np.array([below], np.float32).view(np.int32)[0])

    def _apply(self, backend: Backend, x: torch.Tensor, out: torch.Tensor, what: str,
               generator: torch.Generator | None) -> int | torch.Tensor:
        return backend.stochastic(self, x, out, what, draw_seed(generator))
