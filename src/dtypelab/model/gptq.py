"""GPTQ (Frantar et al., 2022): weight rounding that compensates its error, for any format and granularity.

A layer computes ``y = W x``; rounding ``W`` to ``Q`` costs ``E = tr((W - Q) H (W - Q)^T) / 2`` on the
calibration inputs, with the Hessian ``H = 2 X^T X / n`` of their rows ``X [n, columns]``. GPTQ rounds the
columns of ``W`` in order and, after each, spreads its error over the columns not yet rounded through the
inverse Hessian (the OBS update ``W[:, j:] -= (w_j - q_j) / [H^-1]_jj · [H^-1]_j,j:``), in lazy blocks of
``block`` columns whose updates reach the rest of the matrix at once. As in the paper: the inverse comes from
the upper Cholesky factor of ``(H + λI)^-1`` with damping ``λ = damp · mean(diag H)`` (``damp`` 0.01), and an
input that is never nonzero (``H_jj = 0``) gets ``H_jj = 1`` (its column is not compensated; the paper's code
also zeroes such weights, dtypelab rounds them to nearest instead, so data outside the calibration set still
sees them).

"Round" is the exact quantizer of the layer's :class:`~dtypelab.schemes.Scheme`: its scales (per tensor, per
channel, per block, MX shared exponents ...) are computed from the **original** weight first and then fixed,
and a column is rounded as ``Q(w / s) · s`` with each element's own scale, exactly as ``fake_quantize(W,
scheme, scales)`` rounds it (zero points, clipping and the format's own rounding included). So any dtypelab
format works: posits, LP, e2m1 in MX blocks, NF4, DT, integers. With an identity Hessian nothing is
compensated and the result is round to nearest, bit for bit.

Example:
    >>> import torch
    >>> from dtypelab.schemes import Scheme, fake_quantize
    >>> _ = torch.manual_seed(0)
    >>> w, x = torch.randn(8, 16), torch.randn(256, 16) @ torch.randn(16, 16)   # correlated inputs
    >>> scheme = Scheme.parse("int4/channel/absmax")
    >>> rtn, q = fake_quantize(w, scheme), gptq(w, scheme, hessian([x]))
    >>> err = lambda v: float((x @ (v - w).T).square().sum())
    >>> err(q) < err(rtn), torch.equal(gptq(w, scheme, torch.eye(16)), rtn)
    (True, True)
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dtypelab.schemes import Scheme

BLOCK = 128
DAMP = 0.01


def hessian(inputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """``H = 2 X^T X / n`` (float64, ``[columns, columns]``) of every input's rows (the last axis is the
    layer's input features; leading axes are samples).

    Example:
        >>> import torch
        >>> hessian([torch.tensor([[1.0, 0.0], [1.0, 2.0]])]).tolist()
        [[2.0, 2.0], [2.0, 4.0]]
    """
    h: torch.Tensor | None = None
    n = 0
    for x in inputs:
        rows = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        h = rows.T @ rows if h is None else h + rows.T @ rows
        n += rows.shape[0]
    if h is None or n == 0:
        raise ValueError("GPTQ needs calibration inputs of the layer to form its Hessian; got none")
    return h * (2.0 / n)


def element_scales(w: torch.Tensor, scheme: Scheme) -> tuple[torch.Tensor, torch.Tensor]:
    """The stored scales of ``w``'s groups (float64 ``[groups]``, by the scheme's rule from ``w``) and each
    element's scale in ``w``'s shape and working dtype (the divisor ``fake_quantize`` uses).

    Example:
        >>> import torch
        >>> s, each = element_scales(torch.tensor([[1.0, -7.0], [0.5, 0.25]]), Scheme.parse("int4/channel/absmax"))
        >>> s.tolist(), each.tolist()
        ([1.0, 0.0714285746216774], [[1.0, 1.0], [0.0714285746216774, 0.0714285746216774]])
    """
    sc = scheme.scale(w)
    scales = sc.scales
    per_element = scheme.granularity.ungroup(sc.divisor.expand(sc.rows.shape).contiguous(), sc.layout)
    return scales, per_element


def _round(w: torch.Tensor, s: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """``Q(w / s) · s`` elementwise, as the scheme rounds (``s`` the elements' scales)."""
    return scheme.round_scaled(w / s).mul_(s)


def gptq(weight: torch.Tensor, scheme: Scheme, h: torch.Tensor, block: int = BLOCK,
         damp: float = DAMP, transposed: bool = False) -> torch.Tensor:
    """``weight`` rounded by GPTQ under ``scheme`` for the Hessian ``h`` ``[columns, columns]``: every element
    on the scheme's grid with the scales of the original weight (see the module docstring); same shape and
    dtype. The weight itself is not changed. A weight of more than two dimensions (a convolution's
    ``[out, in, *kernel]``) is its matrix ``[out, in · kernel]`` (columns in ``unfold``'s order); its scales
    are computed in its own shape. ``transposed``: a 2-D weight stored ``[columns, rows]`` (``y = x W``, GPT-2's
    ``Conv1D``); its scales are computed in that stored shape, its columns are its rows.

    Raises:
        ValueError: a weight of fewer than 2 dimensions, a Hessian of the wrong shape or not finite, a bad
            ``block`` or ``damp``, or a Hessian that is not positive definite even after damping.

    Example:
        >>> import torch
        >>> w = torch.tensor([[0.3, 0.3]])
        >>> gptq(w, Scheme.parse("int2/tensor/none"), torch.tensor([[1.0, 1.0], [1.0, 1.0]])).tolist()
        [[0.0, 1.0]]
    """
    if weight.dim() < 2 or (transposed and weight.dim() != 2):
        raise ValueError(f"GPTQ rounds a weight of at least 2 dimensions [rows, columns, ...] (exactly 2 when "
                         f"transposed), got shape {tuple(weight.shape)}")
    if transposed:
        _, stored = element_scales(weight.detach(), scheme)
        return _gptq(weight.detach().T, stored.T, scheme, h, block, damp).T.contiguous().to(weight.dtype)
    _, s_all = element_scales(weight.detach(), scheme)
    return _gptq(weight.detach(), s_all, scheme, h, block, damp).to(weight.dtype).reshape(weight.shape)


def _gptq(w0: torch.Tensor, s_all: torch.Tensor, scheme: Scheme, h: torch.Tensor, block: int,
          damp: float) -> torch.Tensor:
    """GPTQ on ``w0`` ``[rows, ...]`` with each element's fixed scale ``s_all`` (same shape); ``[rows, columns]``."""
    cols = w0[0].numel()
    if tuple(h.shape) != (cols, cols):
        raise ValueError(f"the Hessian must be [{cols}, {cols}] for a weight of shape {tuple(w0.shape)}, got "
                         f"{tuple(h.shape)}")
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive integer (the paper's 128), got {block!r}")
    if not damp >= 0:
        raise ValueError(f"damp must be >= 0 (the paper's 0.01), got {damp!r}")
    h = h.detach().to(torch.float64, copy=True)
    if not bool(torch.isfinite(h).all()):
        raise ValueError("the Hessian holds NaN or infinite values (non-finite calibration inputs?)")
    s_all = s_all.reshape(w0.shape[0], cols)
    work = s_all.dtype
    w = w0.reshape(w0.shape[0], cols).to(work, copy=True)
    diag = torch.diagonal(h)
    diag[diag == 0] = 1.0  # inputs never nonzero: nothing to compensate with
    diag += damp * float(diag.mean())
    try:
        hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    except torch.linalg.LinAlgError:
        raise ValueError(f"the Hessian is not positive definite even with damping {damp}: raise damp") from None
    hinv = hinv.to(work)
    q = torch.empty_like(w)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        w1, h1 = w[:, i1:i2], hinv[i1:i2, i1:i2]
        err = torch.empty_like(w1)
        for i in range(i2 - i1):
            col = w1[:, i]
            qc = _round(col, s_all[:, i1 + i], scheme)
            q[:, i1 + i] = qc
            e = (col - qc) / h1[i, i]
            w1[:, i:] -= e[:, None] * h1[i, i:][None, :]
            err[:, i] = e
        w[:, i2:] -= err @ hinv[i1:i2, i2:]
    return q


__all__ = ["gptq", "hessian", "element_scales", "BLOCK", "DAMP"]
