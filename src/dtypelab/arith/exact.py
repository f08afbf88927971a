"""Exact dot products: an error-free splitting of the operands (float64 matmuls that cannot round) and an
exact sum of a few float64 terms rounded once to odd, so that any later single rounding to a format of at most
25 significant bits is the correctly rounded exact result (the posit quire's one rounding).

Example:
    >>> import torch
    >>> a = torch.tensor([[2.0**40, 1.0, -2.0**40]], dtype=torch.float64)
    >>> b = torch.tensor([[1.0], [2.0**-40], [1.0]], dtype=torch.float64)
    >>> (a @ b).item(), exact_matmul(a, b).item()      # float64 loses the 2^-40; the exact sum keeps it
    (0.0, 9.094947017729282e-13)
"""

from __future__ import annotations

import math

import torch

LIMB = 26  # bits per limb: two limbs (52 bits) fit a float64 exactly


def split(x: torch.Tensor, width: int, dim: int) -> list[torch.Tensor]:
    """``x == sum(slices)`` exactly, each slice holding integers of at most ``width`` bits (in magnitude
    ``<= 2^width``) times one power of two per line along ``dim`` (the line's largest remaining magnitude)."""
    slices = []
    rest = x
    for _ in range(2200 // width + 2):  # float64 spans 2098 binades
        if not bool((rest != 0).any()):
            return slices
        _, e = torch.frexp(rest.abs().amax(dim=dim, keepdim=True))
        grid = torch.ldexp(torch.ones(e.shape, dtype=x.dtype, device=x.device), e - width)
        s = torch.round(rest / grid) * grid
        slices.append(s)
        rest = rest - s  # exact: |rest - s| <= grid / 2 and both lie on rest's grid
    raise AssertionError("split did not terminate")  # pragma: no cover


def slice_width(k: int) -> int:
    """Bits per slice such that a float64 matmul of slices over ``k`` products is exact."""
    w = (53 - max(1, math.ceil(math.log2(max(k, 2))))) // 2
    if w < 4:
        raise ValueError(f"exact dot products of length {k} are not supported (at most 2^40)")
    return w


def sum_to_odd(terms: torch.Tensor) -> torch.Tensor:
    """The exact sum over dim 0 of float64 ``terms``, truncated to at least 27 significant bits with the last
    bit set when anything was dropped (round to odd): rounding it once more to a format of at most 25 bits
    gives the correctly rounded exact sum."""
    shape = terms.shape[1:]
    nonzero = terms != 0
    if not bool(nonzero.any()):
        return torch.zeros(shape, dtype=torch.float64, device=terms.device)
    _, ex = torch.frexp(terms)
    lo = int(ex[nonzero].min()) - 53  # every term is an integer times 2^lo
    hi = int(ex[nonzero].max())
    span = hi - lo + math.ceil(math.log2(terms.shape[0] + 1)) + 2
    if span > 1000:
        raise ValueError(f"exact sum over {span} binades is not supported (terms from 2^{lo} to 2^{hi})")
    n = span // LIMB + 2
    base = 2.0**LIMB
    digits = []
    q = torch.floor(torch.ldexp(terms, torch.tensor(-lo, device=terms.device)))
    for _ in range(n):
        q_next = torch.floor(q / base)
        digits.append((q - q_next * base).sum(0).to(torch.int64))  # T * 2^26 < 2^53: exact
        q = q_next
    digits.append(q.sum(0).to(torch.int64))  # the signed top: 0 or -1 per term
    d = _carry(digits)
    neg = d[-1] < 0
    d = _carry([torch.where(neg, -x, x) for x in d])
    stack = torch.stack(d)  # [n + 1, ...] magnitude digits, all >= 0
    idx = torch.arange(len(d), device=terms.device).reshape(-1, *([1] * len(shape)))
    top = torch.where(stack != 0, idx, -1).amax(0)
    t = top.clamp(min=0)
    below = (t - 1).clamp(min=0)
    d_top = stack.gather(0, t.unsqueeze(0)).squeeze(0)
    d_below = torch.where(t >= 1, stack.gather(0, below.unsqueeze(0)).squeeze(0), 0)
    seen = torch.cumsum((stack != 0).to(torch.int64), 0)
    sticky = (t >= 2) & (seen.gather(0, (t - 2).clamp(min=0).unsqueeze(0)).squeeze(0) > 0)
    window = (d_top * (1 << LIMB) + d_below) | sticky.to(torch.int64)
    value = torch.ldexp(window.to(torch.float64), lo + LIMB * (t - 1))
    value = torch.where(top < 0, 0.0, value)
    return torch.where(neg, -value, value)


def _carry(digits: list[torch.Tensor]) -> list[torch.Tensor]:
    """Normalise limbs: every digit but the last in [0, 2^LIMB), the last signed."""
    mask = (1 << LIMB) - 1
    out = []
    carry = torch.zeros_like(digits[0])
    for d in digits[:-1]:
        v = d + carry
        out.append(v & mask)
        carry = v >> LIMB
    out.append(digits[-1] + carry)
    return out


def exact_matmul(a: torch.Tensor, b: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b (+ extra)`` over float64 ``a [..., M, K]``, ``b [..., K, N]``, exact, rounded once to odd
    (:func:`sum_to_odd`); products below float64's subnormal range are not supported."""
    k = a.shape[-1]
    w = slice_width(k)
    terms = [sa @ sb for sa in split(a, w, -1) for sb in split(b, w, -2)]  # exact: no partial sum rounds
    if extra is not None:
        terms.append(extra.to(torch.float64).expand(terms[0].shape if terms else extra.shape))
    if not terms:
        return torch.zeros((*torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1]),
                           dtype=torch.float64, device=a.device)
    return sum_to_odd(torch.stack(torch.broadcast_tensors(*terms)))


__all__ = ["exact_matmul", "sum_to_odd", "split", "slice_width"]
