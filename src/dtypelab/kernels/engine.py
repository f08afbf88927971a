"""Engines: the tensor-level entry points (quantize / encode / decode) that formats delegate to.

:class:`TableEngine` serves every format of at most 16 bits from its :class:`RoundingTable`;
:class:`PositEngine` serves wider posits with the closed form of posit rounding. Both take torch tensors
of float16, bfloat16, float32 or float64 on any device: CPU tensors go through numba kernels writing
straight into the output, other devices through the same table with ``torch.searchsorted``.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from dtypelab.kernels import lut, posit_closed
from dtypelab.kernels.table import BY_SIGN, UP, RoundingTable

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_CHUNK = 1 << 20  # elements converted at a time for half-precision inputs
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
    """Shared tensor plumbing; subclasses supply ``_cpu`` (numba, in place) and ``_device`` (torch)."""

    bits: int

    def quantize(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        check_input(x)
        out = prepare_out(x, out, x.dtype)
        self._run(x, out, "value")
        return out

    def encode(self, x: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """Codes of ``x`` and the number of NaN inputs seen."""
        check_input(x)
        out = prepare_out(x, out, code_dtype(self.bits))
        return out, self._run(x, out, "code")

    def _run(self, x: torch.Tensor, out: torch.Tensor, what: str) -> int:
        x = x.detach()
        if x.device.type != "cpu":
            result, nans = self._device(x, what)
            out.copy_(result)
            return nans
        x = x.contiguous()
        flat_out = out.view(-1)
        if x.dtype in (torch.float32, torch.float64):
            return self._cpu(x.view(-1).numpy(), flat_out, what)
        nans = 0  # half precision: convert chunk by chunk, keeping temporaries small
        flat = x.view(-1)
        for start in range(0, flat.numel(), _CHUNK):
            chunk = flat[start:start + _CHUNK].float()
            dst = flat_out[start:start + _CHUNK]
            if what == "value":
                tmp = torch.empty_like(chunk)
                nans += self._cpu(chunk.numpy(), tmp, what)
                dst.copy_(tmp)
            else:
                nans += self._cpu(chunk.numpy(), dst, what)
        return nans

    def _cpu(self, x: np.ndarray, out: torch.Tensor, what: str) -> int:
        raise NotImplementedError

    def _device(self, x: torch.Tensor, what: str) -> tuple[torch.Tensor, int]:
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
    def _codes(self) -> np.ndarray:
        return self.table.codes.astype(_NUMPY_CODE[code_dtype(self.bits)])

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

    def _cpu(self, x: np.ndarray, out: torch.Tensor, what: str) -> int:
        m = self.lut(x.dtype)
        bits = x.view(np.int32 if x.dtype == np.float32 else np.int64)
        t = self.table
        total = 8 * x.itemsize
        if what == "code":
            o = self.outputs(x.dtype, self._codes, "code")
        elif out.dtype == torch.float32:
            o = self.outputs(x.dtype, t.float32_values, "float32")
        else:
            o = self.outputs(x.dtype, t.values, "float64")
        if m.form == lut.DIRECT:
            return int(lut.apply_direct(x, bits, out.numpy(), total, m.low_bits, o.first))
        if m.form == lut.CUT:
            return int(lut.apply_cut(x, bits, out.numpy(), total, m.low_bits, o.first, m.cut))
        return int(lut.apply_two_level(x, bits, out.numpy(), o.table, total, m.low_bits, m.first, m.entries,
                                       m.fallback_first, m.fallback_span, t.thresholds, t.tie))

    def _device(self, x: torch.Tensor, what: str) -> tuple[torch.Tensor, int]:
        t = self.table
        x64 = x.to(torch.float64)
        thr = torch.as_tensor(t.thresholds, device=x.device)
        cum_up = torch.as_tensor(np.concatenate([[0], np.cumsum(t.tie == UP)]), device=x.device)
        below = torch.searchsorted(thr, x64, right=False)
        upto = torch.searchsorted(thr, x64, right=True)
        idx = below + cum_up[upto] - cum_up[below]
        for j in np.flatnonzero(t.tie == BY_SIGN):
            idx += ((x64 == float(t.thresholds[j])) & ~torch.signbit(x64)).long()
        nan = torch.isnan(x64)
        idx = torch.where(nan, t.nan_index, idx)
        idx = torch.where(x64 == float("inf"), t.pinf_index, idx)
        idx = torch.where(x64 == float("-inf"), t.ninf_index, idx)
        if what == "code":
            return torch.as_tensor(t.codes, device=x.device)[idx], int(nan.sum())
        return torch.as_tensor(t.values, device=x.device)[idx], int(nan.sum())


class PositEngine(Engine):
    """Closed-form posit rounding (RNE on the bit pattern) for posits of 17 to 32 bits."""

    def __init__(self, n: int, es: int):
        self.bits, self.es = n, es

    def _cpu(self, x: np.ndarray, out: torch.Tensor, what: str) -> int:
        kernel = posit_closed.quantize if what == "value" else posit_closed.encode
        return int(kernel(x, out.numpy(), self.bits, self.es))

    def _device(self, x: torch.Tensor, what: str) -> tuple[torch.Tensor, int]:
        cpu = x.to("cpu", torch.float64)
        out = torch.empty(cpu.shape, dtype=cpu.dtype if what == "value" else code_dtype(self.bits))
        nans = self._cpu(cpu.view(-1).numpy(), out.view(-1), what)
        return out.to(x.device), nans
