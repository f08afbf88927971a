"""Fused block scaling: one pass per block computes the block's scale and rounds its scaled elements through the
shared lookup table (:mod:`dtypelab.kernels.lut`), writing codes or dequantized values.

It reproduces, bit for bit, the generic path of :mod:`dtypelab.schemes` (float32 inputs) for the rules whose
scale is a closed form of the block's absmax: ``none``, ``absmax`` (scale ``float32(absmax / max)``, 1 for an
all-zero block) and ``mx`` (``2^(floor(log2 absmax) - emax)`` clamped to >= 2^-127, NaN above 2^127, times the
element's fixed-point unit; elements clipped to ±max first). Elements are ``x / s`` in float32, plus the zero
point. NaN elements set no absmax scale; under MX a block holding a NaN gets a NaN scale (the OCP rule).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from dtypelab.kernels.lut import key_and_low, lookup

RULE_NONE, RULE_ABSMAX, RULE_MX = 0, 1, 2
CHUNK_BLOCKS_ELEMENTS = 1 << 14  # elements per parallel work item (whole blocks)


@njit(inline="always")
def _block_scale(x, start, end, rule, qmax, emax, unit):
    if rule == RULE_NONE:
        return np.float32(1.0)
    amax = np.float32(0.0)
    nan = False
    for i in range(start, end):
        a = abs(x[i])
        if a != a:
            nan = True
        elif a > amax:
            amax = a
    if rule == RULE_ABSMAX:  # NaN elements set no scale
        return np.float32(amax / qmax) if amax > 0 else np.float32(1.0)
    if nan:
        return np.float32(np.nan)
    if rule == RULE_MX:
        a64 = float(amax) if amax > 0 else 2.0**-126
        if a64 == math.inf:
            return np.float32(np.nan)
        e = math.frexp(a64)[1] - 1 - emax
        if e > 127:
            return np.float32(np.nan)
        if e < -127:
            e = -127
        return np.float32(math.ldexp(unit, e))
    return np.float32(1.0)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def block_quantize(x, block, rule, qmax, emax, unit, zero_point, clip, want_codes, table, out, scales,
                   form, low_bits, first, cut, entries, fb_first, fb_span, thresholds, tie):
    """Quantize float32 ``x`` in blocks of ``block`` (the last may be short).

    ``scales[b]`` receives each block's scale. With ``want_codes``, ``out[i] = table[interval]`` (codes); else
    ``out[i] = (table[interval] - zero_point) * scale`` (fake-quantized float32 values).
    """
    n = x.size
    nblocks = (n + block - 1) // block
    per_chunk = max(1, CHUNK_BLOCKS_ELEMENTS // block)
    nchunks = (nblocks + per_chunk - 1) // per_chunk
    zp = np.float32(zero_point)
    lim = np.float32(qmax)
    for c in prange(nchunks):
        tmp = np.empty(per_chunk * block, dtype=np.float32)
        bits = tmp.view(np.int32)
        b0 = c * per_chunk
        b1 = min(b0 + per_chunk, nblocks)
        for b in range(b0, b1):
            start = b * block
            end = min(start + block, n)
            s = _block_scale(x, start, end, rule, qmax, emax, unit)
            scales[b] = s
            base = (b - b0) * block
            for i in range(start, end):
                v = x[i] / s
                if clip:
                    v = min(max(v, -lim), lim)
                tmp[base + i - start] = v + zp
            for i in range(start, end):
                k = base + i - start
                key, low = key_and_low(bits[k], low_bits, 32)
                j = lookup(form, tmp[k], key, low, low_bits, 32, first, cut, entries, fb_first, fb_span, thresholds,
                           tie)
                if want_codes:
                    out[i] = table[j]
                else:
                    out[i] = (table[j] - zp) * s
