"""Fused block scaling: one pass per block computes the block's scale and rounds its scaled elements through the
shared lookup table (:mod:`dtypelab.kernels.lut`), writing codes or dequantized values.

It reproduces, bit for bit, the generic path of :mod:`dtypelab.schemes` (float32 inputs) for the rules whose
scale is a closed form of the block's absmax: ``none``, ``absmax`` (scale ``float32(absmax / max)`` clamped to
float32's positive range, 1 for an all-zero block) and ``mx`` (``2^(floor(log2 absmax) - emax)`` clamped to
>= 2^-127, NaN above 2^127, times the element's fixed-point unit; elements clipped to ±max first) with its
variants ``mx-ceil``, ``mx-even`` (which reads the element's fraction bits ``mbits``) and ``mx-rceil``, their
exponents computed in integers from ``frexp`` of the absmax, as the generic path does. Elements are
``x / s`` in float32, plus the zero point. Non-finite elements set no absmax scale; under MX a block holding a NaN
or an infinity gets a NaN scale (the OCP rule). The block's absmax is reduced on the float32 bit patterns, so
that it vectorizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange

from dtypelab.kernels.lut import CUT, DIRECT, TWO_LEVEL, lookup


@dataclass(frozen=True)
class BlockRule:
    """What a fused block kernel needs of a scale rule and the element range: the rule's kernel name
    (``none``, ``absmax``, ``mx``, ``mx-ceil``, ``mx-even`` or ``mx-rceil``), the element max, MX's ``emax`` and
    fixed-point unit, the zero point, whether elements are clipped to ±max before rounding, and the element's
    fraction bits in its top binade (``mbits``, read by ``mx-even``)."""

    name: str
    qmax: float
    emax: int = 0
    unit: float = 1.0
    zero_point: float = 0.0
    clip: bool = False
    mbits: int = 0


RULE_NONE, RULE_ABSMAX, RULE_MX = 0, 1, 2
RULE_MX_CEIL, RULE_MX_EVEN, RULE_MX_RCEIL = 3, 4, 5  # the MX variants (schemes/scales.py: MxCeil ...)
RULE_GIVEN = 6  # the scales are the caller's (static scales): ``scales`` is read, not written
RULES = {"none": RULE_NONE, "absmax": RULE_ABSMAX, "mx": RULE_MX, "mx-ceil": RULE_MX_CEIL, "mx-even": RULE_MX_EVEN,
         "mx-rceil": RULE_MX_RCEIL, "given": RULE_GIVEN}  # BlockRule.name -> the kernels' rule
CHUNK_ELEMENTS = 1 << 14  # elements per parallel work item (whole blocks)


_MAGNITUDE, _INF = np.int32(0x7FFFFFFF), np.int32(0x7F800000)  # float32 bits: |x| mask, +inf
_TINY, _HUGE = np.float32(2.0**-149), np.float32(np.finfo(np.float32).max)  # float32's positive range


@njit(inline="always")
def _absmax(bits, start, end):
    """A block's largest finite |x| (0 if none), whether it holds a NaN, and whether it holds a NaN or an
    infinity, reduced on the float32 bit patterns (integer order is magnitude order, inf then NaN above every
    finite value), so that it vectorizes; a second pass only for blocks holding a non-finite value."""
    top = np.int32(0)
    for i in range(start, end):
        top = max(top, np.int32(bits[i] & _MAGNITUDE))
    nonfinite = top >= _INF
    nan = top > _INF
    if nonfinite:
        top = np.int32(0)
        for i in range(start, end):
            a = np.int32(bits[i] & _MAGNITUDE)
            top = max(top, a if a < _INF else np.int32(0))
    return np.int32(top).view(np.float32), nan, nonfinite


@njit(inline="always")
def _mx_exponent(a64, rule, qmax, emax, unit, mbits):
    """The shared exponent of an MX block of absmax ``a64`` (> 0), by the variant ``rule``, in integers."""
    mantissa, exp = math.frexp(a64)  # mantissa in [0.5, 1): floor(log2 a64) = exp - 1
    if rule == RULE_MX_CEIL:
        return exp - (mantissa == 0.5) - emax
    if rule == RULE_MX_EVEN:
        return exp - 1 + (mantissa >= 1.0 - 2.0 ** -(mbits + 2)) - emax
    if rule == RULE_MX_RCEIL:
        top_mantissa, top_exp = math.frexp(qmax * unit)
        return exp - top_exp + (mantissa > top_mantissa)
    return exp - 1 - emax


@njit(inline="always")
def _block_scale(bits, start, end, rule, qmax, emax, unit, mbits):
    """The block's scale, and whether it holds a NaN."""
    amax, nan, nonfinite = _absmax(bits, start, end)
    if rule == RULE_NONE:
        return np.float32(1.0), nan
    if rule == RULE_ABSMAX:  # non-finite elements set no scale; a float32 scale stays in float32's range
        if amax == 0:
            return np.float32(1.0), nan
        return min(max(np.float32(amax / qmax), _TINY), _HUGE), nan
    if nonfinite:  # MX: a NaN or an infinity makes the shared scale NaN (OCP)
        return np.float32(np.nan), nan
    e = _mx_exponent(float(amax) if amax > 0 else 2.0**-126, rule, qmax, emax, unit, mbits)
    if e > 127:
        return np.float32(np.nan), nan
    return np.float32(math.ldexp(unit, max(e, -127))), nan


@njit(inline="always")
def _element(x, s, clip, lim, zp):
    """What the element lookup sees: ``x / s``, clipped to ±lim under MX, plus the zero point."""
    v = x / s
    if clip:
        v = min(max(v, -lim), lim)
    if zp != 0:
        v += zp
    return v


@njit(inline="always")
def _blocks(form, x, block, rule, qmax, emax, unit, zero_point, clip, scale_out, out, scales, low_bits, lut_arrays,
            mbits):
    """The body of the ``block_*`` kernels, inlined into each with its lookup ``form`` a constant."""
    first, cut, entries, fb_first, fb_span, thresholds, tie, table, first_out = lut_arrays
    n = x.size
    bits = x.view(np.int32)
    zp = np.float32(zero_point)
    lim = np.float32(qmax)
    nblocks = (n + block - 1) // block
    per_chunk = max(1, CHUNK_ELEMENTS // block)
    nan_blocks = 0
    for c in prange((nblocks + per_chunk - 1) // per_chunk):
        # unsigned bounds: numba then adds no negative-index wraparound, and the loops load contiguously
        c0, c1 = np.uint64(c * per_chunk * block), np.uint64(min((c + 1) * per_chunk * block, n))
        scaled = np.empty(c1 - c0, dtype=np.float32)  # the chunk's elements, scaled
        scaled_bits = scaled.view(np.int32)
        for b in range(c * per_chunk, min((c + 1) * per_chunk, nblocks)):
            start, end = np.uint64(b * block), np.uint64(min(b * block + block, n))
            if rule == RULE_GIVEN:  # the caller's scale (a static one)
                s, nan = scales[b], _absmax(bits, start, end)[1]
            else:
                s, nan = _block_scale(bits, start, end, rule, qmax, emax, unit, mbits)
                scales[b] = s
            nan_blocks += nan
            for i in range(start, end):  # (vectorized: the lookup below is not)
                scaled[i - c0] = _element(x[i], s, clip, lim, zp)
        for i in range(c0, c1):  # one lookup loop per chunk, not per block: ~15 % faster
            k = i - c0
            out[i] = lookup(form, scaled[k], scaled_bits[k], low_bits, 32, first, cut, entries, fb_first, fb_span,
                            thresholds, tie, table, first_out)
        if scale_out:
            for b in range(c * per_chunk, min((c + 1) * per_chunk, nblocks)):
                s = scales[b]
                for i in range(np.uint64(b * block), np.uint64(min(b * block + block, n))):
                    out[i] *= s
    return nan_blocks


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def block_direct(x, block, rule, qmax, emax, unit, zero_point, clip, scale_out, out, scales, low_bits, lut_arrays,
                 mbits):
    """Quantize float32 ``x`` in blocks of ``block`` (the last may be short) through a direct :class:`Lut`, whose
    arrays (:func:`lut.lookup`'s nine) ``lut_arrays`` holds. Returns the number of blocks that hold a NaN.

    ``scales[b]`` receives each block's scale (under ``RULE_GIVEN`` it holds it already), ``out[i]`` the lookup's
    result (codes, or values less the zero
    point); with ``scale_out`` the result times the block's scale (fake-quantized float32 values). ``mbits``: the
    element's fraction bits, for ``RULE_MX_EVEN``.
    """
    return _blocks(DIRECT, x, block, rule, qmax, emax, unit, zero_point, clip, scale_out, out, scales, low_bits,
                   lut_arrays, mbits)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def block_cut(x, block, rule, qmax, emax, unit, zero_point, clip, scale_out, out, scales, low_bits, lut_arrays,
              mbits):
    """:func:`block_direct` through a :class:`Lut` with ``cut``."""
    return _blocks(CUT, x, block, rule, qmax, emax, unit, zero_point, clip, scale_out, out, scales, low_bits,
                   lut_arrays, mbits)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def block_two_level(x, block, rule, qmax, emax, unit, zero_point, clip, scale_out, out, scales, low_bits, lut_arrays,
                    mbits):
    """:func:`block_direct` through a two-level :class:`Lut`."""
    return _blocks(TWO_LEVEL, x, block, rule, qmax, emax, unit, zero_point, clip, scale_out, out, scales, low_bits,
                   lut_arrays, mbits)


KERNELS = {DIRECT: block_direct, CUT: block_cut, TWO_LEVEL: block_two_level}  # by Lut.form


# ---- the block scales in torch ops (any device, no host synchronisation) --------------------------------------


def torch_block_scales(flat: torch.Tensor, size: int, rule: BlockRule, given: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_block_scale` of every block of ``size`` of flat float32 ``flat`` (the last may be short): float32
    scales (``given`` ones under the rule ``given``) and, per block, whether it holds a NaN. The absmax is reduced
    on the bit patterns, as the kernels do.

    Example:
        >>> from dtypelab.kernels.blockwise import BlockRule
        >>> s, nan = torch_block_scales(torch.tensor([1.0, -6.0, 0.0, float("nan")]), 2, BlockRule("absmax", 3.0))
        >>> s.tolist(), nan.tolist()
        ([2.0, 1.0], [False, True])
    """
    bits = flat.view(torch.int32) & 0x7FFFFFFF  # (one copy of the input: the rest is done in place, or per block)
    full = flat.numel() // size * size

    def per_block(a: torch.Tensor) -> torch.Tensor:  # the max of each block, the short last one included
        top = a[:full].view(-1, size).amax(dim=1)
        return top if full == a.numel() else torch.cat([top, a[full:].amax().view(1)])

    top = per_block(bits)
    nan, nonfinite = top > int(_INF), top >= int(_INF)
    amax = per_block(bits.masked_fill_(bits >= int(_INF), 0)).view(torch.float32)
    one = torch.ones_like(amax)
    if rule.name == "given":
        return given, nan
    if rule.name == "none":
        return one, nan
    if rule.name == "absmax":
        s = (amax.to(torch.float64) / rule.qmax).to(torch.float32).clamp(float(_TINY), float(_HUGE))
        return torch.where(amax == 0, one, s), nan
    a64 = torch.where(amax > 0, amax.to(torch.float64), 2.0**-126)
    mantissa, exp = torch.frexp(a64)
    exp = exp.long()
    if rule.name == "mx-ceil":
        e = exp - (mantissa == 0.5).long() - rule.emax
    elif rule.name == "mx-even":
        e = exp - 1 + (mantissa >= 1.0 - 2.0 ** -(rule.mbits + 2)).long() - rule.emax
    elif rule.name == "mx-rceil":
        top_mantissa, top_exp = math.frexp(rule.qmax * rule.unit)
        e = exp - top_exp + (mantissa > top_mantissa).long()
    else:
        e = exp - 1 - rule.emax
    s = (rule.unit * ((e.clamp(-127, 127) + 1023) << 52).view(torch.float64)).to(torch.float32)
    return torch.where(nonfinite | (e > 127), math.nan, s), nan
