"""Loss scaling: dynamic growth and back-off, skipped steps on inf/NaN, static scales, and why it matters: gradients
below a narrow format's range flush to zero in the backward unless the loss is scaled."""

from __future__ import annotations

import pytest
import torch

from dtypelab.model.backward import attach_backward
from dtypelab.training import LossScaler, loss_scaler


def _step(scaler: LossScaler, opt: torch.optim.Optimizer, w: torch.nn.Parameter, grad: float) -> bool:
    w.grad = torch.full_like(w, grad * scaler.scale_value)
    return scaler.step(opt)


def test_dynamic_scale_grows_after_interval_and_backs_off_on_overflow() -> None:
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=1.0)
    scaler = LossScaler(init_scale=8.0, growth=2.0, backoff=0.25, interval=3)
    scales = []
    for grad in (0.5, 0.5, 0.5, 0.5, float("nan"), 0.5):
        scales.append((_step(scaler, opt, w, grad), scaler.scale_value))
    assert scales == [(True, 8.0), (True, 8.0), (True, 16.0), (True, 16.0), (False, 4.0), (True, 4.0)]
    assert torch.equal(w.detach(), torch.full((3,), -2.5))  # five steps of 0.5: the gradients were unscaled
    assert (scaler.steps, scaler.skipped) == (5, 1)


def test_static_scale_keeps_its_value_and_skips_non_finite_steps() -> None:
    w = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([w], lr=1.0)
    scaler = loss_scaler("static:1024")
    assert _step(scaler, opt, w, 1.0) and not _step(scaler, opt, w, float("inf"))
    assert scaler.scale_value == 1024.0 and w.tolist() == [-1.0, -1.0] and scaler.skipped == 1


def test_scaling_keeps_small_gradients_inside_a_narrow_format() -> None:
    """e5m2 without a scale holds nothing below 2^-16: a weight gradient of ~1e-7 flushes to zero; scaled by 2^16 the
    loss gives it back, within e5m2's relative precision."""
    results = {}
    for scale in (None, 2.0**16):
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 1, bias=False)
        attach_backward(layer, {"backward": {"weight_grad": "e5m2"}})
        w = layer.weight
        opt = torch.optim.SGD([w], lr=1.0)
        before = w.detach().clone()
        loss = layer(torch.full((1, 4), 1e-7)).sum()
        if scale is None:
            loss.backward()
            opt.step()
        else:
            scaler = LossScaler(scale, dynamic=False)
            scaler.scale(loss).backward()
            scaler.step(opt)
        results[scale] = before - w.detach()
    assert torch.equal(results[None], torch.zeros(1, 4))
    assert torch.allclose(results[2.0**16], torch.full((1, 4), 1e-7), rtol=0.125)


@pytest.mark.parametrize("bad, match", [
    ("static:-1", "finite number > 0"), ("static:x", "static:x"), ("sometimes", "give null"), (True, "give null"),
    ({"init_scale": 4.0, "grow": 2.0}, "unknown key"), ({"backoff": 1.5}, "backoff"), ({"interval": 0}, "interval"),
    ({"growth": 1.0}, "growth"), (float("inf"), "finite"),
])
def test_bad_loss_scale(bad: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        loss_scaler(bad)
