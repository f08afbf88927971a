"""Exact dot products: an error-free splitting of the operands (float64 matmuls that cannot round) and an
exact sum of a few float64 terms rounded once to odd at 53 bits, so that any later single rounding to a format of
at most 51 significant bits is the correctly rounded exact result (the posit quire's one rounding).

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

from dtypelab.kernels.oddsum import odd_sum

LIMB = 26  # bits per limb: a limb's sum over the terms stays exact in float64 (count * 2^26 < 2^53)


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
    """The exact sum over dim 0 of float64 ``terms`` rounded to odd at 53 bits (truncated, the last bit set when
    anything was dropped): rounding it once more to a format of at most 51 significant bits gives the correctly
    rounded exact sum. On the CPU one numba pass (:func:`dtypelab.kernels.oddsum.odd_sum`), elsewhere limbs in
    torch (terms spanning at most 1000 binades)."""
    if terms.device.type == "cpu":
        flat = terms.detach().reshape(terms.shape[0], math.prod(terms.shape[1:])).numpy()
        return torch.from_numpy(odd_sum(flat)).reshape(terms.shape[1:])
    return _sum_to_odd_limbs(terms)


def _sum_to_odd_limbs(terms: torch.Tensor) -> torch.Tensor:
    """:func:`sum_to_odd` in torch ops on any device: every term an integer in 26-bit limbs, summed limb by limb,
    carried, the top 53 bits kept."""
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

    def limb(i: torch.Tensor) -> torch.Tensor:  # digit i, 0 below the first
        return torch.where(i >= 0, stack.gather(0, i.clamp(min=0).unsqueeze(0)).squeeze(0), 0)

    t = top.clamp(min=0)
    d0, d1, d2 = limb(t), limb(t - 1), limb(t - 2)
    bits = torch.frexp(d0.to(torch.float64))[1].to(torch.int64).clamp(min=1)  # the top digit's, 1..26
    mant = (d0 << (53 - bits)) | (d1 << (27 - bits)) | (d2 >> (bits - 1))
    seen = torch.cumsum((stack != 0).to(torch.int64), 0)
    below = (t >= 3) & (seen.gather(0, (t - 3).clamp(min=0).unsqueeze(0)).squeeze(0) > 0)
    sticky = ((d2 & ((1 << (bits - 1)) - 1)) != 0) | below
    e = lo + LIMB * (t - 2) + bits - 1
    value = torch.ldexp(torch.ldexp((mant | sticky.to(torch.int64)).to(torch.float64), e // 2), e - e // 2)
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
    """``a @ b (+ extra)`` over float64 ``a [..., M, K]``, ``b [..., K, N]``, exact, rounded once to odd at 53
    bits (:func:`sum_to_odd`); products below float64's subnormal range are not supported."""
    k = a.shape[-1]
    w = slice_width(k)
    b_slices = split(b, w, -2)
    terms = [sa @ sb for sa in split(a, w, -1) for sb in b_slices]  # exact: no partial sum rounds
    if extra is not None:
        terms.append(extra.to(torch.float64).expand(terms[0].shape if terms else extra.shape))
    if not terms:
        return torch.zeros((*torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1]),
                           dtype=torch.float64, device=a.device)
    return sum_to_odd(torch.stack(torch.broadcast_tensors(*terms)))


__all__ = ["exact_matmul", "sum_to_odd", "split", "slice_width"]
