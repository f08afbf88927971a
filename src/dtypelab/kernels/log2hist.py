"""PositTune's histogram rule as one numba kernel: per row, the centre of the fullest of ``bins`` equal bins of
``log2|x|`` over the row's [min, max] (exact zeros, NaN and infinities left out).

For a row with finite nonzero magnitudes ``a``: ``lo = log2(min a)``, ``hi = log2(max a)``, ``w = (hi - lo) / bins``;
element ``a`` falls in bin ``clamp(floor((log2 a - lo) / w), 0, bins - 1)`` (every element in bin 0 when
``w = 0``); the centre is ``lo + (k + 0.5) w`` for the first fullest bin ``k``. A row with no finite nonzero
element gets NaN. Rows run in parallel; a few long rows (a per-tensor activation) are split into chunks instead.

``log2`` is this module's :func:`log2`, in float64 whatever the rows' dtype (the rows are never copied to
float64): ``frexp``, then a fixed sequence of IEEE float64 additions, multiplications and one division (an odd
series in ``s = f / (2 + f)``), which numba, torch (:func:`torch_log2`) and Triton (``kernels/gpu.py``) evaluate
to the same bits, so that every backend picks the same bins and returns the same centres. (The C library's log2,
used before, is not torch's: they differ in the last bit for about one input in a thousand.) It is within a few ulps
of numpy's log2 (3 ulps at most on 3.5 million inputs), and exact on powers of two.

Example:
    >>> import numpy as np
    >>> float(log2_hist_centres(np.array([[0.25, 0.25, 4.0]]), 4)[0])   # bins of width 1 over [-2, 2]
    -1.5
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import get_num_threads, njit, prange

CHUNK = 1 << 16  # elements per work item when one row is split

SQRT_HALF = 0.7071067811865476  # frexp's mantissa below this is doubled: f = m - 1 in [-0.293, 0.415)
LOG2_SERIES = tuple(2.0 / ((2 * k + 1) * math.log(2.0)) for k in range(11))  # log2(1 + f) = s * sum c_k s^2k
LOG2_CONSTANTS = (SQRT_HALF, *LOG2_SERIES)  # what the Triton kernel loads (its float literals would be float32)


@njit(inline="always")
def _log2(a):
    m, e = math.frexp(a)
    if m < SQRT_HALF:
        m = m * 2.0
        e -= 1
    f = m - 1.0
    s = f / (f + 2.0)
    z = s * s
    p = LOG2_SERIES[10]
    for k in range(9, -1, -1):  # Horner, no fused multiply-add (numba does not contract without fastmath)
        p = p * z + LOG2_SERIES[k]
    return float(e) + s * p


@njit(cache=True)
def log2(a):
    """The shared float64 log2 of finite ``a > 0`` (see the module docstring).

    Example:
        >>> log2(8.0), log2(0.5), bool(abs(log2(10.0) - math.log2(10.0)) <= 3 * np.spacing(math.log2(10.0)))
        (3.0, -1.0, True)
    """
    return _log2(a)


def torch_log2(a: torch.Tensor) -> torch.Tensor:
    """:func:`log2` of every element of a float64 tensor of finite positive values, in the same operations.

    Example:
        >>> torch_log2(torch.tensor([8.0, 10.0], dtype=torch.float64)).tolist() == [3.0, log2(10.0)]
        True
    """
    m, e = torch.frexp(a)
    small = m < SQRT_HALF
    m = torch.where(small, m * 2.0, m)
    f = m - 1.0
    s = f / (f + 2.0)
    z = s * s
    p = torch.full_like(z, LOG2_SERIES[10])
    for c in reversed(LOG2_SERIES[:10]):
        p = p * z + c
    return (e - small.to(e.dtype)).to(torch.float64) + s * p


@njit(inline="always")
def _range_of(x, start, end):
    lo, hi = math.inf, 0.0
    for i in range(start, end):
        a = abs(float(x[i]))
        if a != 0.0 and a < math.inf:  # NaN fails `a < inf`
            lo = min(lo, a)
            hi = max(hi, a)
    return lo, hi


@njit(inline="always")
def _count(x, start, end, lo, width, counts):
    bins = counts.shape[0]
    for i in range(start, end):
        a = abs(float(x[i]))
        if a != 0.0 and a < math.inf:
            b = int(math.floor((_log2(a) - lo) / width)) if width > 0 else 0
            counts[min(max(b, 0), bins - 1)] += 1


@njit(inline="always")
def _centre(counts, lo, width):
    k = 0
    for j in range(1, counts.shape[0]):
        if counts[j] > counts[k]:
            k = j
    return lo + (k + 0.5) * width


@njit(parallel=True, cache=True, nogil=True)
def _per_row(x, bins, out):
    for r in prange(x.shape[0]):
        row = x[r]
        lo, hi = _range_of(row, 0, row.shape[0])
        if lo > hi:
            out[r] = np.nan
            continue
        lo, hi = _log2(lo), _log2(hi)
        counts = np.zeros(bins, np.int64)
        width = (hi - lo) / bins
        _count(row, 0, row.shape[0], lo, width, counts)
        out[r] = _centre(counts, lo, width)


@njit(parallel=True, cache=True, nogil=True)
def _chunked_row(row, bins):
    n = row.shape[0]
    chunks = (n + CHUNK - 1) // CHUNK
    los = np.empty(chunks)
    his = np.empty(chunks)
    for c in prange(chunks):
        los[c], his[c] = _range_of(row, c * CHUNK, min(n, (c + 1) * CHUNK))
    lo, hi = los.min(), his.max()
    if lo > hi:
        return np.nan
    lo, hi = _log2(lo), _log2(hi)
    width = (hi - lo) / bins
    counts = np.zeros((chunks, bins), np.int64)
    for c in prange(chunks):
        _count(row, c * CHUNK, min(n, (c + 1) * CHUNK), lo, width, counts[c])
    return _centre(counts.sum(axis=0), lo, width)


def log2_hist_centres(rows: np.ndarray, bins: int) -> np.ndarray:
    """The log2 centre of the fullest bin of each row of ``rows`` (2-D float32 or float64), NaN for a row
    with no finite nonzero element."""
    rows = np.ascontiguousarray(rows)
    if rows.shape[0] >= get_num_threads() or rows.shape[1] <= CHUNK:
        out = np.empty(rows.shape[0])
        _per_row(rows, bins, out)
        return out
    return np.array([_chunked_row(row, bins) for row in rows])


def torch_log2_hist_range(rows: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of ``rows`` (float32 or float64): ``lo`` and the bin width (float64; 0 and 0 for a row with nothing
    to count), and whether the row has nothing to count."""
    a = rows.detach().abs()
    if a.shape[1] == 0:  # rows of no element: a zero each, left out like any zero (amin refuses an empty row)
        a = a.new_zeros(a.shape[0], 1)
    valid = (a != 0) & (a < math.inf)  # NaN fails `a < inf`
    lo = torch.where(valid, a, math.inf).amin(dim=1).to(torch.float64)
    hi = torch.where(valid, a, 0).amax(dim=1).to(torch.float64)
    empty = lo > hi
    lo, hi = torch_log2(torch.where(empty, 1.0, lo)), torch_log2(torch.where(empty, 1.0, hi))
    return lo, (hi - lo) / bins, empty


def torch_log2_hist_pick(counts: torch.Tensor, lo: torch.Tensor, width: torch.Tensor, empty: torch.Tensor
                         ) -> torch.Tensor:
    """The centre of the first fullest bin of each row of ``counts`` (``[rows, bins]``), NaN for an empty row."""
    k = counts.argmax(dim=1)  # the first of equal counts
    return torch.where(empty, math.nan, lo + (k + 0.5) * width)


def torch_log2_hist_centres(rows: torch.Tensor, bins: int) -> torch.Tensor:
    """:func:`log2_hist_centres` in tensor ops on ``rows``' device (float64 ``[rows]``, no host synchronisation):
    the same bins, the same first fullest bin and the same centres, bit for bit (:func:`torch_log2`).

    Example:
        >>> float(torch_log2_hist_centres(torch.tensor([[0.25, 0.25, 4.0]]), 4)[0])
        -1.5
    """
    rows = rows.detach()
    rows = rows if rows.dtype in (torch.float32, torch.float64) else rows.float()  # exact for half precision
    lo, width, empty = torch_log2_hist_range(rows, bins)
    a = rows.abs()
    valid = (a != 0) & (a < math.inf)
    logs = torch_log2(torch.where(valid, a, 1).to(torch.float64))
    safe = torch.where(width > 0, width, 1.0)[:, None]
    b = torch.where(width[:, None] > 0, torch.floor((logs - lo[:, None]) / safe), 0).clamp(0, bins - 1).long()
    counts = torch.zeros(rows.shape[0], bins + 1, dtype=torch.int64, device=rows.device)
    counts.scatter_add_(1, torch.where(valid, b, bins), torch.ones_like(b))  # column `bins`: left-out elements
    return torch_log2_hist_pick(counts[:, :bins], lo, width, empty)
