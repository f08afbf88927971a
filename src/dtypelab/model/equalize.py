"""Activation-aware equalization: per input channel scales ``s`` with ``y = (W · diag(s)) (x / s) = W x``.

Dividing a Linear layer's input channel ``j`` by ``s_j`` and multiplying the weight's column ``j`` by it leaves
the FP32 output as it was (to float rounding); only what is rounded changes. Config: a layer option
``equalize: NAME[:ARG]`` (:data:`EQUALIZERS`):

* ``smoothquant:ALPHA`` (Xiao et al., 2022; default ``ALPHA`` 0.5, the migration strength):
  ``s_j = max|X_j|^α / max|W_:,j|^(1-α)``, moving the activations' outliers into the weights so both round
  well (for W8A8-style schemes). A channel that is never nonzero (or whose weights are all zero) keeps ``s = 1``.
* ``awq[:ROWS]`` (Lin et al., 2023, AWQ's scale search): ``s_j = mean|X_j|^α`` (over every calibration row),
  normalised by ``sqrt(max s · min s)``, for the ``α`` in ``0, 0.05, ..., 1`` whose weights, rounded to nearest
  by the layer's weight scheme, give the least output error ``||Q(W s) (X / s) - W X||²`` (first on ties;
  ``α = 0`` is ``s = 1``, so it is never worse there than no equalization). The error is measured on at most
  ``ROWS`` calibration rows (default :data:`AWQ_ROWS`; ``awq:all`` uses every row), drawn without replacement
  by a generator seeded with :data:`AWQ_SEED`, so the search is deterministic and its cost does not grow with
  the calibration set.

The scales come from the calibration inputs (``quantize_model`` gathers them in its one calibration pass).

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> w, x = torch.randn(4, 6), torch.randn(100, 6) * torch.tensor([1.0, 30.0, 1.0, 1.0, 0.1, 1.0])
    >>> s = equalizer("smoothquant:0.5").scales(w, [x], None)
    >>> torch.allclose((x / s) @ (w * s).T, x @ w.T, rtol=1e-5, atol=1e-5), s.shape
    (True, torch.Size([6]))
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dtypelab.schemes import Scheme, fake_quantize

AWQ_GRID = 20  # alpha in 0, 1/20, ..., 1
AWQ_ROWS = 512  # calibration rows the scale search measures its error on (awq:ROWS, awq:all)
AWQ_SEED = 0
SMOOTHQUANT_ALPHA = 0.5


def _channel_rows(inputs: list[torch.Tensor], columns: int) -> torch.Tensor:
    if not inputs:
        raise ValueError("equalization needs the layer's calibration inputs; got none")
    rows = [x.detach().reshape(-1, x.shape[-1]) for x in inputs]
    if any(r.shape[1] != columns for r in rows):
        raise ValueError(f"equalization: the layer's inputs must have {columns} features (its weight's columns), "
                         f"got {sorted({r.shape[1] for r in rows})}")
    return torch.cat(rows).to(torch.float64)


def _smoothquant(alpha: float) -> Callable[..., torch.Tensor]:
    def scales(weight: torch.Tensor, inputs: list[torch.Tensor], scheme: Scheme | None,
               transposed: bool = False) -> torch.Tensor:
        x = _channel_rows(inputs, weight.shape[1])
        ax = x.abs().amax(dim=0)
        aw = weight.detach().to(torch.float64).abs().amax(dim=0)
        s = ax.pow(alpha) / aw.pow(1.0 - alpha)
        ok = (ax > 0) & (aw > 0) & torch.isfinite(s) & (s > 0)
        return torch.where(ok, s, torch.ones_like(s)).to(weight.dtype)

    return scales


def _sample_rows(x: torch.Tensor, limit: int | None) -> torch.Tensor:
    """At most ``limit`` of ``x``'s rows (all if None or fewer), drawn with the :data:`AWQ_SEED` generator."""
    if limit is None or x.shape[0] <= limit:
        return x
    pick = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(AWQ_SEED))[:limit]
    return x[pick.sort().values.to(x.device)]


def _awq(rows: int | None) -> Callable[..., torch.Tensor]:
    def scales(weight: torch.Tensor, inputs: list[torch.Tensor], scheme: Scheme | None,
               transposed: bool = False) -> torch.Tensor:
        if scheme is None:
            raise ValueError("equalize: awq searches scales for the layer's weight scheme; this layer keeps FP32 "
                             "weights (give it a weights scheme, or use smoothquant)")
        x = _channel_rows(inputs, weight.shape[1]).to(weight.dtype)
        w = weight.detach()
        mean = x.abs().mean(dim=0)
        mean = torch.where(mean > 0, mean, mean[mean > 0].min() if bool((mean > 0).any()) else torch.ones_like(mean))
        x = _sample_rows(x, rows)
        ref = x @ w.T
        best, best_err = torch.ones_like(mean), math.inf
        for k in range(AWQ_GRID + 1):
            s = mean.pow(k / AWQ_GRID)
            s = s / torch.sqrt(s.max() * s.min())
            ws = w * s
            q = fake_quantize(ws.T, scheme).T if transposed else fake_quantize(ws, scheme)
            err = float(((x / s) @ q.T - ref).square().sum())
            if err < best_err:
                best, best_err = s, err
        return best

    return scales


@dataclass(frozen=True)
class Equalizer:
    """An equalization rule: ``scales(weight [rows, columns], inputs, weight scheme or None, transposed=False)
    -> s [columns]`` (``weight``'s dtype, positive), with its canonical spec ``text``; ``transposed``: the layer
    stores ``weight.T`` (GPT-2's ``Conv1D``), so its scheme rounds that layout."""

    text: str
    scales: Callable[..., torch.Tensor]

    def __str__(self) -> str:
        return self.text


def _parse_smoothquant(arg: str) -> Equalizer:
    try:
        alpha = float(arg) if arg else SMOOTHQUANT_ALPHA
    except ValueError:
        alpha = math.nan
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smoothquant:{arg}: the migration strength alpha must be a number in [0, 1], "
                         "e.g. smoothquant:0.5")
    text = repr(alpha)
    return Equalizer(f"smoothquant:{text[:-2] if text.endswith('.0') else text}", _smoothquant(alpha))


def _parse_awq(arg: str) -> Equalizer:
    if not arg:
        return Equalizer("awq", _awq(AWQ_ROWS))
    if arg == "all":
        return Equalizer("awq:all", _awq(None))
    if not arg.isdigit() or int(arg) < 1:
        raise ValueError(f"awq:{arg}: the argument is how many calibration rows the scale search uses, a "
                         f"positive integer or 'all' (default {AWQ_ROWS}), e.g. awq:1024")
    rows = int(arg)
    return Equalizer("awq" if rows == AWQ_ROWS else f"awq:{rows}", _awq(rows))


EQUALIZERS: dict[str, Callable[[str], Equalizer]] = {"smoothquant": _parse_smoothquant, "awq": _parse_awq}


def equalizer(spec: str) -> Equalizer:
    """The equalizer ``NAME[:ARG]`` (:data:`EQUALIZERS`); a miss lists the valid names.

    Example:
        >>> str(equalizer("SmoothQuant")), str(equalizer("smoothquant:0.80")), str(equalizer("awq:512"))
        ('smoothquant:0.5', 'smoothquant:0.8', 'awq')
    """
    if not isinstance(spec, str):
        raise TypeError(f"an equalizer must be a name such as 'smoothquant:0.5', got {type(spec).__name__}")
    name, _, arg = spec.strip().lower().partition(":")
    parse = EQUALIZERS.get(name)
    if parse is None:
        raise ValueError(f"unknown equalizer {spec!r}; valid: {', '.join(EQUALIZERS)} (smoothquant:ALPHA, awq:ROWS)")
    return parse(arg)


__all__ = ["Equalizer", "EQUALIZERS", "equalizer", "AWQ_GRID", "AWQ_ROWS", "AWQ_SEED", "SMOOTHQUANT_ALPHA"]
