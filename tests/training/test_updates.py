"""Stochastic rounding of weight updates is unbiased; nearest rounding of updates below half an ulp stalls.

One weight, 1.0 in bf16, takes 300 SGD updates of 1e-4 (the bf16 ulp just below 1 is 2^-8 ~ 3.9e-3, so each
update is 1/39 of an ulp). The experiment is repeated on 4096 independent copies of that weight at once (one
tensor: every element is rounded with its own random bits), which gives the mean and its standard error.
"""

from __future__ import annotations

import math

import torch

from dtypelab.training import LowPrecisionOptimizer

STEPS, COPIES, UPDATE = 300, 4096, 1e-4


def _train(weight_scheme: str | None) -> torch.Tensor:
    w = torch.nn.Parameter(torch.ones(COPIES))
    opt = LowPrecisionOptimizer(torch.optim.SGD([w], lr=1.0), weight=weight_scheme,
                                generator=torch.Generator().manual_seed(0))
    for _ in range(STEPS):
        w.grad = torch.full((COPIES,), UPDATE)
        opt.step()
    return w.detach()


def test_stochastic_updates_are_unbiased_and_nearest_stalls() -> None:
    fp32 = float(_train(None)[0])
    assert abs(fp32 - (1 - STEPS * UPDATE)) < 1e-5  # FP32 follows the updates
    sr = _train("bf16/tensor/none//sr").double()
    mean, se = float(sr.mean()), float(sr.std()) / math.sqrt(COPIES)
    assert se > 0  # the copies did differ: the rounding was random
    assert abs(mean - fp32) < 4 * se, (mean, fp32, se)
    assert bool((sr.float() == sr.float().to(torch.bfloat16).float()).all())  # every copy is a bf16 value
    nearest = _train("bf16/tensor/none")
    assert bool((nearest == 1.0).all())  # every update rounded away: stalled
    assert abs(1.0 - fp32) > 100 * se  # and far from FP32 (about 180 standard errors)


def test_stochastic_updates_are_reproducible_from_the_generator() -> None:
    assert torch.equal(_train("bf16/tensor/none//sr"), _train("bf16/tensor/none//sr"))
