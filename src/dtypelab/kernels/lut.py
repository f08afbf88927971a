"""Fast path of the rounding engine: a two-level lookup on the bits of the input, in numba.

The *bucket* of an input is its top ``key_bits`` bits (16: float32 sign, exponent and 7 mantissa bits; float64
sign, exponent and 4 mantissa bits); the *low* bits are the rest. 16 key bits (a 512 KiB first level) settle
every bucket of most formats of 8 bits or fewer; where 20 key bits (8 MiB: uint8, fp16, bf16 for float32 inputs)
or 22 (32 MiB: posit(16,1)) settle every bucket and 16 do not, those are used (:func:`choose_lut`). For each bucket,
:func:`build_lut` stores one packed word ``head = offset << 6 | shift`` pointing into an int32 ``entries``
array. An input's entry is::

    entries[offset + 2 * (low >> shift) + ((low & (2**shift - 1)) != 0)]

i.e. the bucket is cut into ``2**(lowbits - shift)`` sub-buckets, and each sub-bucket has two entries: its
lowest member exactly, and the rest of it. Splitting off the lowest member is what makes thresholds that
sit exactly on a sub-bucket boundary (all thresholds of minifloats, posits, integers — they are dyadic)
cheap: ``x == t`` with a downward tie lands on the "exact" entry, everything above on the other.
``shift`` is chosen per bucket as large as possible (at most 8 extra bits): a bucket with no threshold
inside uses ``shift = lowbits`` and shares a 2-entry block per interval. An entry ``>= 0`` is the interval;
a negative entry ``-1 - i`` marks a sub-bucket that still straddles a threshold (irrational LP thresholds,
rare), settled by a binary search over ``fallback_first[i] .. + fallback_span[i]``.

Where no bucket holds more than one threshold (the dynamic tree, NF4 and the 8-bit LPs for float32 inputs:
thresholds that no width settles, but that are sparse), the second level is replaced by ``cut``: the rest of
bucket ``k`` is interval ``first[2k+1]`` below the low bits ``cut[k]`` and the next one (the previous one for
a negative bucket) from there on, a branch-free lookup (:func:`apply_cut`).

NaN and infinities need no branch: their buckets hold the NaN / ±inf intervals like any other. The kernels
write ``table[interval]`` — a value (``apply_*``) or a code (``encode_*``) — into a preallocated output; the
code kernels also count the NaN inputs, from a flag bit of the NaN interval's code (:func:`flagged_codes`), and
store codes of at most 8 bits four at a time. The direct and cut kernels read the table already applied to the
first level (:class:`Outputs`): one dependent load per input. Results equal
:meth:`RoundingTable.reference_index` exactly (tests check every bucket's ends and random inputs).

numba compiles each kernel once per dtype combination and caches it on disk (``cache=True``), so a new
process pays only the load.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from dtypelab.kernels.table import UP, RoundingTable

_TOTAL_BITS = {np.dtype(np.float32): 32, np.dtype(np.float64): 64}
KEY_BITS = (16, 20, 22)  # first-level widths tried, narrowest first
_INT = {np.dtype(np.float32): np.int32, np.dtype(np.float64): np.int64}
_UINT = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
MAX_SUB_BITS = 8  # a bucket is cut into at most 2**8 sub-buckets
DIRECT, CUT, TWO_LEVEL = 0, 1, 2  # the forms of a Lut (Lut.form)


@dataclass(frozen=True)
class Lut:
    """The two-level table of one :class:`RoundingTable` for one input dtype (see the module docstring)."""

    low_bits: int
    first: np.ndarray  # int32 (int64 if needed) [2 * 2**key_bits]
    entries: np.ndarray  # int32
    fallback_first: np.ndarray  # int32
    fallback_span: np.ndarray  # int32
    cut: np.ndarray | None = None  # [2**key_bits] low bits where the rest of a bucket crosses its one threshold

    @cached_property
    def direct(self) -> bool:
        """True when every bucket is settled by the first level (no threshold inside any bucket)."""
        return self.cut is None and bool(self.first.min() >= 0)

    @property
    def form(self) -> int:
        """``DIRECT``, ``CUT`` or ``TWO_LEVEL``: which lookup settles every input."""
        return DIRECT if self.direct else CUT if self.cut is not None else TWO_LEVEL

    @property
    def cut_or_empty(self) -> np.ndarray:
        """``cut``, or a placeholder for kernels that take it whatever the form."""
        return self.cut if self.cut is not None else np.zeros(1, np.int32)

    @property
    def nbytes(self) -> int:
        arrays = (self.first, self.entries, self.fallback_first, self.fallback_span, self.cut)
        return sum(a.nbytes for a in arrays if a is not None)


def _index_of_bits(table: RoundingTable, bits: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return table.reference_index(bits.astype(_UINT[dtype]).view(dtype))


def _cuts(table: RoundingTable, keys: np.ndarray, in_idx: np.ndarray, straddle: np.ndarray, low_bits: int,
          dtype: np.dtype) -> np.ndarray:
    """Per bucket, the smallest low bits (> 0) whose interval differs from ``in_idx`` (``2**low_bits``: none),
    found by bisection over the bit patterns of the buckets in ``straddle``."""
    cut = np.full(keys.size, 1 << low_bits, dtype=np.int64)
    a = np.ones(straddle.size, dtype=np.int64)
    b = np.full(straddle.size, (1 << low_bits) - 1, dtype=np.int64)  # the last pattern has moved
    while (a < b).any():
        mid = (a + b) // 2
        moved = _index_of_bits(table, keys[straddle] + mid.astype(np.uint64), dtype) != in_idx[straddle]
        b = np.where(moved, mid, b)
        a = np.where(moved, a, np.minimum(mid + 1, b))
    cut[straddle] = a
    return cut


def settled_at(table: RoundingTable, dtype: np.dtype, key_bits: int) -> bool:
    """True when every finite threshold is a ``dtype`` value whose low bits (below the top ``key_bits``) are zero:
    then no threshold lies inside a bucket and the :class:`Lut` is direct."""
    dtype = np.dtype(dtype)
    t = table.thresholds[np.isfinite(table.thresholds)]
    with np.errstate(over="ignore"):  # a threshold beyond the dtype's range becomes inf: not a dtype value
        as_input = t.astype(dtype)
    low = as_input.view(_UINT[dtype]) & _UINT[dtype]((1 << (_TOTAL_BITS[dtype] - key_bits)) - 1)
    return bool(np.all(as_input == t) and not low.any())


def choose_lut(table: RoundingTable, dtype: np.dtype) -> Lut:
    """The narrowest :class:`Lut` of ``KEY_BITS`` that is direct; else the narrowest (the wider tables do not
    settle thresholds that are not short binary fractions, such as LP's and the dynamic tree's)."""
    key_bits = next((k for k in KEY_BITS if settled_at(table, dtype, k)), KEY_BITS[0])
    return build_lut(table, dtype, key_bits)


def build_lut(table: RoundingTable, dtype: np.dtype, key_bits: int = 16, cuts: bool = True) -> Lut:
    """Build the :class:`Lut` of ``table`` for ``float32`` or ``float64`` inputs, keyed on the top ``key_bits``;
    with ``cuts``, a table whose buckets hold at most one threshold each gets ``Lut.cut`` instead of a second
    level."""
    dtype = np.dtype(dtype)
    lb = _TOTAL_BITS[dtype] - key_bits
    keys = np.arange(1 << key_bits, dtype=np.uint64) << np.uint64(lb)
    span_mask = np.uint64((1 << lb) - 1)
    lo_idx = _index_of_bits(table, keys, dtype)
    hi_idx = _index_of_bits(table, keys | span_mask, dtype)
    in_idx = _index_of_bits(table, keys + np.uint64(1), dtype)  # lowest member excluded
    first = np.empty(2 << key_bits, dtype=np.int64)
    first[0::2] = lo_idx  # the bucket's lowest member, exactly
    first[1::2] = in_idx  # the rest of it, where no threshold lies inside
    entries: list[np.ndarray] = []
    offset = 0
    fb_first: list[np.ndarray] = []
    fb_span: list[np.ndarray] = []
    n_fb = 0
    straddle = np.flatnonzero(in_idx != hi_idx)
    if cuts and straddle.size and int(np.abs(hi_idx - in_idx).max()) == 1:
        none = np.zeros(1, np.int32)
        cut = _cuts(table, keys, in_idx, straddle, lb, dtype)
        return Lut(low_bits=lb, first=first.astype(np.int32), entries=none, fallback_first=none, fallback_span=none,
                   cut=cut.astype(np.int32) if lb < 31 else cut)
    remaining = straddle
    for t in range(MAX_SUB_BITS + 1):  # coarse to fine: each bucket gets the fewest sub bits that suffice
        if not remaining.size:
            break
        sh = lb - t
        sub = np.arange(1 << t, dtype=np.uint64) << np.uint64(sh)
        base = (keys[remaining][:, None] + sub[None, :]).reshape(-1)  # lowest member of each sub-bucket
        a = _index_of_bits(table, base + np.uint64(1), dtype).reshape(len(remaining), -1)
        b = _index_of_bits(table, base + np.uint64((1 << sh) - 1), dtype).reshape(a.shape)
        done = (a == b).all(axis=1) | (t == MAX_SUB_BITS)
        rows = np.flatnonzero(done)
        if rows.size:
            ex = _index_of_bits(table, base.reshape(a.shape)[rows].reshape(-1), dtype).reshape(len(rows), -1)
            ins, last = a[rows].astype(np.int64), b[rows]
            bad = ins != last
            if bad.any():  # only at the finest level: sub-buckets settled by a search
                k = int(bad.sum())
                fb_first.append(np.minimum(ins[bad], last[bad]).astype(np.int32))
                fb_span.append(np.abs(ins[bad] - last[bad]).astype(np.int32))
                ins[bad] = -1 - (n_fb + np.arange(k))
                n_fb += k
            blk = np.stack([ex, ins], axis=2).astype(np.int32).reshape(len(rows), -1)
            entries.append(blk.reshape(-1))
            heads = (offset + blk.shape[1] * np.arange(len(rows), dtype=np.int64)) << 6 | sh
            first[2 * remaining[rows] + 1] = -1 - heads
            offset += blk.size
        remaining = remaining[~done]
    if int(first.min()) >= -(2**31):  # half the cache footprint
        first = first.astype(np.int32)
    return Lut(
        low_bits=lb,
        first=first,
        entries=np.concatenate(entries).astype(np.int32) if entries else np.zeros(1, np.int32),
        fallback_first=np.concatenate(fb_first) if fb_first else np.zeros(1, np.int32),
        fallback_span=np.concatenate(fb_span) if fb_span else np.zeros(1, np.int32),
    )


@njit(inline="always")
def _passes(x, t, tie):
    if x > t:
        return True
    if x == t:
        if tie == UP:
            return True
        if tie == 2:  # BY_SIGN: +0.0 passes, -0.0 does not
            return np.copysign(1.0, x) > 0
    return False


@njit(inline="always")
def _settle(x, lo, span, thresholds, tie):
    hi = lo + span
    while lo < hi:
        mid = (lo + hi) >> 1
        if _passes(x, thresholds[mid], tie[mid]):
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(inline="always")
def _interval(x, key, low, first, entries, fb_first, fb_span, thresholds, tie):
    j = first[2 * key + (low != 0)]
    if j < 0:  # a threshold lies inside the bucket: second level
        h = -1 - j
        sh = h & 63
        j = entries[(h >> 6) + 2 * (low >> sh) + ((low & ((np.int64(1) << sh) - 1)) != 0)]
        if j < 0:  # still straddling (irrational thresholds): search
            f = -1 - j
            j = _settle(x, fb_first[f], fb_span[f], thresholds, tie)
    return j


@njit(inline="always")
def key_and_low(b, low_bits, total_bits):
    """The bucket (top bits, sign included) and the low bits of a ``total_bits``-wide bit pattern ``b``."""
    one = np.int64(1)
    return (b >> low_bits) & ((one << (total_bits - low_bits)) - one), b & ((one << low_bits) - one)


@dataclass(frozen=True)
class Outputs:
    """What the kernels write for each lookup: ``table`` (values or codes, by interval) and, for the direct and cut
    forms, ``first``: the table already applied to the first level, so that an input costs one dependent load, not
    two. Direct: ``first[2k + (low != 0)]`` as :attr:`Lut.first`. Cut: three per bucket, ``first[3k + j]`` with
    ``j`` = 0 for the bucket's lowest member, 1 for the rest below its cut, 2 from the cut on."""

    table: np.ndarray
    first: np.ndarray


def outputs(m: Lut, table: np.ndarray) -> Outputs:
    """The :class:`Outputs` of ``table`` (indexed by interval) under the lookup ``m``."""
    if m.form == TWO_LEVEL:
        return Outputs(table, table[:1])
    if m.cut is None:
        return Outputs(table, table[m.first])
    key_bits = m.first.size.bit_length() - 2
    negative = np.arange(m.cut.size) >> (key_bits - 1) == 1  # larger patterns are more negative
    moved = np.clip(m.first[1::2] + np.where(negative, -1, 1), 0, table.size - 1)  # (clipped: buckets with no cut)
    first = np.empty(3 * m.cut.size, dtype=table.dtype)
    first[0::3], first[1::3], first[2::3] = table[m.first[0::2]], table[m.first[1::2]], table[moved]
    return Outputs(table, first)


@njit(inline="always")
def _direct(b, low_bits, total_bits, first):
    """The direct form's result for bit pattern ``b`` (``first``: its :attr:`Outputs.first`)."""
    key, low = key_and_low(b, low_bits, total_bits)
    return first[2 * key + (low != 0)]


@njit(inline="always")
def _cut(b, low_bits, total_bits, first, cut):
    """The cut form's result for bit pattern ``b`` from its :attr:`Outputs.first`: the bucket's lowest member, the
    rest below its cut, or the rest from the cut on (the cut is never 0, so the lowest member is never past it)."""
    key, low = key_and_low(b, low_bits, total_bits)
    return first[3 * key + (low != 0) + (low >= cut[key])]


@njit(inline="always")
def _two_level(x, b, low_bits, total_bits, first, entries, fb_first, fb_span, thresholds, tie, table):
    """The two-level form's result for ``x`` (bit pattern ``b``): ``table`` at its interval."""
    key, low = key_and_low(b, low_bits, total_bits)
    return table[_interval(x, key, low, first, entries, fb_first, fb_span, thresholds, tie)]


@njit(inline="always")
def lookup(form, x, b, low_bits, total_bits, first, cut, entries, fb_first, fb_span, thresholds, tie, table, first_out):
    """The result for ``x`` (bit pattern ``b``) under a :class:`Lut` of the given form: the Lut's arrays, its
    table's ``thresholds`` and ``tie``, and the two arrays of its :class:`Outputs` (``TableEngine.lookup_arrays``
    gives all nine in this order)."""
    if form == DIRECT:
        return _direct(b, low_bits, total_bits, first_out)
    if form == CUT:
        return _cut(b, low_bits, total_bits, first_out, cut)
    return _two_level(x, b, low_bits, total_bits, first, entries, fb_first, fb_span, thresholds, tie, table)


# Values and codes: the code tables hold ``code | is_nan << FLAG_SHIFT`` (:func:`flagged_codes`), so a kernel
# writing codes counts the NaN inputs as a sum of flags (:func:`_flag`), and one writing values counts nothing: no
# NaN test runs per input (``x != x`` in the loop cost the cut formats a third of their speed).

FLAG_SHIFT = 16  # table codes have at most 16 bits


def flagged_codes(codes: np.ndarray, nan_index: int) -> np.ndarray:
    """``codes`` (by interval) as int32 with the NaN interval's flag bit set (see :func:`encode_direct`)."""
    flagged = codes.astype(np.int32)
    flagged[nan_index] |= 1 << FLAG_SHIFT
    return flagged


def _stored(e):
    """What a kernel writes for the table entry ``e``: a value as it is, a flagged code without its flag (the
    kernels compile the overload below for the entry's type)."""
    return e if isinstance(e, float | np.floating) else e & ((1 << FLAG_SHIFT) - 1)


def _flag(e):
    """1 for the flagged code of the NaN interval, else 0 (always 0 for a value)."""
    return 0 if isinstance(e, float | np.floating) else e >> FLAG_SHIFT


@overload(_stored, inline="always")
def _stored_entry(e):
    if isinstance(e, types.Float):
        return lambda e: e
    return lambda e: e & ((1 << FLAG_SHIFT) - 1)


@overload(_flag, inline="always")
def _flag_entry(e):
    if isinstance(e, types.Float):
        return lambda e: 0
    return lambda e: e >> FLAG_SHIFT


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_direct(bits, out, total_bits, low_bits, first):
    """``out[i]`` = the direct form's result for ``bits[i]`` (``x`` viewed as an integer of ``total_bits``: 32,
    64), ``first`` its :attr:`Outputs.first` (values, or :func:`flagged_codes`): one table load per input.
    Returns the number of NaN inputs for codes, 0 for values."""
    nans = 0
    for i in prange(bits.size):
        e = _direct(bits[i], low_bits, total_bits, first)
        out[i] = _stored(e)
        nans += _flag(e)
    return nans


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_cut(bits, out, total_bits, low_bits, first, cut):
    """:func:`apply_direct` for the cut form."""
    nans = 0
    for i in prange(bits.size):
        e = _cut(bits[i], low_bits, total_bits, first, cut)
        out[i] = _stored(e)
        nans += _flag(e)
    return nans


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def apply_two_level(x, bits, out, table, total_bits, low_bits, first, entries, fb_first, fb_span, thresholds, tie):
    """:func:`apply_direct` for the two-level form: ``out[i] = table[interval(x[i])]``."""
    nans = 0
    for i in prange(x.size):
        e = _two_level(x[i], bits[i], low_bits, total_bits, first, entries, fb_first, fb_span, thresholds, tie,
                       table)
        out[i] = _stored(e)
        nans += _flag(e)
    return nans


# Codes of at most 8 bits are written four to a 32-bit store (``words``: the output's first ``4 * words.size``
# bytes viewed as uint32, little-endian; the last few one by one): byte stores one at a time, whose addresses
# advance a quarter as fast as the input's, keep meeting the input loads at the same address modulo 4 KiB and ran at
# half the speed of the same loop writing int32.


@njit(inline="always")
def _pack4(e0, e1, e2, e3):
    """Four flagged 8-bit codes as one little-endian 32-bit word, and their NaN flags' count."""
    word = np.uint32(e0 & 0xFF) | np.uint32(e1 & 0xFF) << 8 | np.uint32(e2 & 0xFF) << 16 | np.uint32(e3 & 0xFF) << 24
    return word, (e0 >> FLAG_SHIFT) + (e1 >> FLAG_SHIFT) + (e2 >> FLAG_SHIFT) + (e3 >> FLAG_SHIFT)


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def encode_direct(bits, out, words, total_bits, low_bits, first):
    """8-bit codes through the direct form (``first``: its :attr:`Outputs.first` of :func:`flagged_codes`): the
    first ``4 * words.size`` into ``words``, four to a word, the rest into ``out``. Returns the number of NaN
    inputs."""
    nans = 0
    for q in prange(words.size):
        i = 4 * q
        words[q], flags = _pack4(_direct(bits[i], low_bits, total_bits, first),
                                 _direct(bits[i + 1], low_bits, total_bits, first),
                                 _direct(bits[i + 2], low_bits, total_bits, first),
                                 _direct(bits[i + 3], low_bits, total_bits, first))
        nans += flags
    for i in range(4 * words.size, bits.size):
        e = _direct(bits[i], low_bits, total_bits, first)
        out[i] = _stored(e)
        nans += _flag(e)
    return nans


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def encode_cut(bits, out, words, total_bits, low_bits, first, cut):
    """:func:`encode_direct` for the cut form."""
    nans = 0
    for q in prange(words.size):
        i = 4 * q
        words[q], flags = _pack4(_cut(bits[i], low_bits, total_bits, first, cut),
                                 _cut(bits[i + 1], low_bits, total_bits, first, cut),
                                 _cut(bits[i + 2], low_bits, total_bits, first, cut),
                                 _cut(bits[i + 3], low_bits, total_bits, first, cut))
        nans += flags
    for i in range(4 * words.size, bits.size):
        e = _cut(bits[i], low_bits, total_bits, first, cut)
        out[i] = _stored(e)
        nans += _flag(e)
    return nans


@njit(parallel=True, cache=True, nogil=True, boundscheck=False)
def encode_two_level(x, bits, out, words, table, total_bits, low_bits, first, entries, fb_first, fb_span,
                     thresholds, tie):
    """:func:`encode_direct` for the two-level form (``table``: :func:`flagged_codes` by interval)."""
    nans = 0
    for q in prange(words.size):
        i = 4 * q
        words[q], flags = _pack4(
            _two_level(x[i], bits[i], low_bits, total_bits, first, entries, fb_first, fb_span, thresholds, tie, table),
            _two_level(x[i + 1], bits[i + 1], low_bits, total_bits, first, entries, fb_first, fb_span, thresholds,
                       tie, table),
            _two_level(x[i + 2], bits[i + 2], low_bits, total_bits, first, entries, fb_first, fb_span, thresholds,
                       tie, table),
            _two_level(x[i + 3], bits[i + 3], low_bits, total_bits, first, entries, fb_first, fb_span, thresholds,
                       tie, table))
        nans += flags
    for i in range(4 * words.size, bits.size):
        e = _two_level(x[i], bits[i], low_bits, total_bits, first, entries, fb_first, fb_span, thresholds, tie, table)
        out[i] = _stored(e)
        nans += _flag(e)
    return nans
