"""PositTune's histogram rule as one numba kernel: per row, the centre of the fullest of ``bins`` equal bins of
``log2|x|`` over the row's [min, max] (exact zeros, NaN and infinities left out).

For a row with finite nonzero magnitudes ``a``: ``lo = log2(min a)``, ``hi = log2(max a)``, ``w = (hi - lo) / bins``;
element ``a`` falls in bin ``clamp(floor((log2 a - lo) / w), 0, bins - 1)`` (every element in bin 0 when
``w = 0``); the centre is ``lo + (k + 0.5) w`` for the first fullest bin ``k``. ``log2`` is the C library's, in
float64, whatever the rows' dtype, so the rows are never copied to float64. A row with no finite nonzero element
gets NaN. Rows run in parallel; a few long rows (a per-tensor activation) are split into chunks instead.

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
            b = int(math.floor((math.log2(a) - lo) / width)) if width > 0 else 0
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
        lo, hi = math.log2(lo), math.log2(hi)
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
    lo, hi = math.log2(lo), math.log2(hi)
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


def torch_log2_hist_centres(rows: torch.Tensor, bins: int) -> torch.Tensor:
    """:func:`log2_hist_centres` in tensor ops on ``rows``' device (float64 ``[rows]``, no host synchronisation):
    the same bins and the same first fullest bin, with ``log2`` in float64.

    Example:
        >>> float(torch_log2_hist_centres(torch.tensor([[0.25, 0.25, 4.0]]), 4)[0])
        -1.5
    """
    a = rows.detach().abs()
    a = a if a.dtype in (torch.float32, torch.float64) else a.float()  # exact for half precision
    valid = (a != 0) & (a < math.inf)  # NaN fails `a < inf`
    lo = torch.where(valid, a, math.inf).amin(dim=1).to(torch.float64)
    hi = torch.where(valid, a, 0).amax(dim=1).to(torch.float64)
    empty = lo > hi
    lo, hi = torch.log2(torch.where(empty, 1.0, lo)), torch.log2(torch.where(empty, 1.0, hi))
    width = (hi - lo) / bins
    logs = torch.log2(torch.where(valid, a, 1).to(torch.float64))
    safe = torch.where(width > 0, width, 1.0)[:, None]
    b = torch.where(width[:, None] > 0, torch.floor((logs - lo[:, None]) / safe), 0).clamp(0, bins - 1).long()
    counts = torch.zeros(rows.shape[0], bins + 1, dtype=torch.int64, device=rows.device)
    counts.scatter_add_(1, torch.where(valid, b, bins), torch.ones_like(b))  # column `bins`: left-out elements
    k = counts[:, :bins].argmax(dim=1)  # the first of equal counts
    return torch.where(empty, math.nan, lo + (k + 0.5) * width)
