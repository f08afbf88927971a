"""LowPrecisionOptimizer: FP32 formats reproduce the plain optimizer bit for bit; block-wise DT8 Adam states equal the
block-wise DT8 rounding of the FP32 state of the same step (against a rounding written here); state bits."""

from __future__ import annotations

import copy

import pytest
import torch

import dtypelab as dl
from dtypelab.training import LowPrecisionOptimizer

DT8 = "dt8/block:256/absmax"
UDT8 = "udt8/block:256/absmax"
OPTIMIZERS = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-4),
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))


def _loss(model: torch.nn.Module, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    x, y = torch.randn(8, 16, generator=g), torch.randint(0, 4, (8,), generator=g)
    return torch.nn.functional.cross_entropy(model(x), y)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("formats", [
    {"weight": "fp32", "grad": "fp32", "states": "fp32", "master_weights": True},
    {"weight": None, "grad": None, "states": {"exp_avg": "float32", "exp_avg_sq": None, "momentum_buffer": "fp32"}},
])
def test_fp32_formats_reproduce_the_plain_optimizer_bit_for_bit(name: str, formats: dict) -> None:
    plain_model, wrapped_model = _model(), _model()
    plain = OPTIMIZERS[name](plain_model.parameters())
    states = formats["states"]
    if isinstance(states, dict):  # only the names this optimizer has
        held = {"adam": ("exp_avg", "exp_avg_sq"), "sgd-momentum": ("momentum_buffer",)}[name]
        formats = {**formats, "states": {k: v for k, v in states.items() if k in held}}
    wrapped = LowPrecisionOptimizer(OPTIMIZERS[name](wrapped_model.parameters()), **formats)
    for step in range(20):
        for model, opt in ((plain_model, plain), (wrapped_model, wrapped)):
            opt.zero_grad()
            _loss(model, step).backward()
            opt.step()
        for p, q in zip(plain_model.parameters(), wrapped_model.parameters(), strict=True):
            assert torch.equal(p, q), f"step {step}"
            for key, v in plain.state[p].items():
                assert torch.equal(v, wrapped.state[q][key]), f"step {step}, state {key}"
    assert wrapped.state_bits_per_param() == {"adam": 64.0, "sgd-momentum": 32.0}[name] \
        + (32.0 if formats.get("master_weights") else 0.0)


def _block_dt8(x: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Block-wise codebook rounding written out: blocks of 256 in flat order (the last one short), s = max|x| of the
    block (1 where it is 0), q = the codebook value nearest to x / s (float32), times s."""
    flat = x.reshape(-1)
    out = torch.empty_like(flat)
    table = values.to(torch.float64)
    for start in range(0, flat.numel(), 256):
        block = flat[start:start + 256]
        s = block.abs().max()
        s = torch.where(s == 0, torch.ones_like(s), s)
        y = (block / s).to(torch.float64)
        nearest = table[(y[:, None] - table[None, :]).abs().argmin(dim=1)]
        out[start:start + 256] = nearest.to(torch.float32) * s
    return out.reshape(x.shape)


def test_dt8_adam_states_are_the_block_rounding_of_the_fp32_step() -> None:
    torch.manual_seed(1)
    w = torch.nn.Parameter(torch.randn(700))  # three blocks, the last one short
    opt = LowPrecisionOptimizer(torch.optim.Adam([w], lr=1e-2, betas=(0.9, 0.999)),
                                states={"exp_avg": DT8, "exp_avg_sq": UDT8})
    dt8, udt8 = dl.fmt("dt8").values(), dl.fmt("udt8").values()
    changed = 0
    for step in range(6):
        w.grad = torch.randn(700) * (10.0 ** -step)  # gradients shrinking by decades: the tree's range matters
        before = {k: v.clone() for k, v in opt.state[w].items()} if step else None
        # the FP32 step from the stored (dequantized) states: plain Adam on copies
        ref_w = torch.nn.Parameter(w.detach().clone())
        ref = torch.optim.Adam([ref_w], lr=1e-2, betas=(0.9, 0.999))
        if before is not None:
            ref.state[ref_w] = copy.deepcopy(before)
        ref_w.grad = w.grad.clone()
        ref.step()
        opt.step()
        m, v = opt.state[w]["exp_avg"], opt.state[w]["exp_avg_sq"]
        m32, v32 = ref.state[ref_w]["exp_avg"], ref.state[ref_w]["exp_avg_sq"]
        assert torch.equal(m, _block_dt8(m32, dt8)), f"step {step}"
        assert torch.equal(v, _block_dt8(v32, udt8)), f"step {step}"
        assert torch.equal(m, dl.fake_quantize(m32, DT8)) and torch.equal(v, dl.fake_quantize(v32, UDT8))
        assert torch.equal(w.detach(), ref_w.detach()), f"step {step}: the update is the FP32 step's"
        changed += int(not torch.equal(m, m32))
        assert bool((v >= 0).all())
    assert changed == 6  # the rounding did something at every step
    assert opt.state_bits() == {"exp_avg": 8 * 700 + 32 * 3, "exp_avg_sq": 8 * 700 + 32 * 3}


def test_state_bits_per_param_of_dt8_adam() -> None:
    w = torch.nn.Parameter(torch.randn(4, 256))
    opt = LowPrecisionOptimizer(torch.optim.Adam([w]), states={"exp_avg": DT8, "exp_avg_sq": UDT8},
                                master_weights=True)
    w.grad = torch.randn(4, 256)
    opt.step()
    assert opt.state_bits_per_param() == 16.25 + 32.0
    assert set(opt.state_bits()) == {"exp_avg", "exp_avg_sq", "master"}


def test_weight_and_gradient_formats_with_master_weights() -> None:
    w = torch.nn.Parameter(torch.tensor([1.0, -3.0, 0.1]))
    opt = LowPrecisionOptimizer(torch.optim.SGD([w], lr=1e-3), weight="bf16", grad="int4/tensor/absmax",
                                master_weights=True)
    w.grad = torch.tensor([0.3, 5.0, -7.0])
    opt.step()
    g = dl.fake_quantize(torch.tensor([0.3, 5.0, -7.0]), "int4/tensor/absmax")
    master = torch.tensor([1.0, -3.0, 0.1]) - 1e-3 * g  # the master copy starts from the FP32 weight
    assert torch.equal(opt.master[w], master)
    assert torch.equal(w.detach(), dl.fmt("bf16").quantize(master))


def test_bad_input() -> None:
    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        LowPrecisionOptimizer([w])
    with pytest.raises(ValueError, match="weight: scheme 'posit9' does not parse"):
        LowPrecisionOptimizer(torch.optim.SGD([w], lr=0.1), weight="posit9")
    with pytest.raises(ValueError, match="state 'exp_avg'"):
        LowPrecisionOptimizer(torch.optim.Adam([w]), states={"exp_avg": "dt8/block:0/absmax"})
    opt = LowPrecisionOptimizer(torch.optim.SGD([w], lr=0.1, momentum=0.9), states={"exp_avg": DT8})
    w.grad = torch.ones(3)
    with pytest.raises(ValueError, match=r"states \['exp_avg'\] are not states of SGD; its states are "
                                         r"\['momentum_buffer'\]"):
        opt.step()
