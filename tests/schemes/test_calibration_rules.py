"""The calibration rules: ``percentile:P`` is ``torch.quantile`` of |x|, ``entropy`` is TensorRT's KL-divergence
search done through the format's own values, and both (with ``mse``) are computed once, at calibration."""

import math

import numpy as np
import pytest
import torch

import dtypelab as dl
from dtypelab.schemes.scales import ENTROPY_BINS, ENTROPY_MIN_BINS, RULE_FAMILIES, RULES, Percentile

FORMATS = ["int8", "uint8", "posit(8,1)", "e4m3", "e2m1", "nf4", "dt4", "lp(8,2,2,0)"]


@pytest.mark.parametrize("p", [50.0, 99.0, 99.99, 100.0, 0.5])
def test_percentile_equals_torch_quantile(p):
    torch.manual_seed(0)
    x = torch.randn(6, 777, dtype=torch.float64) * torch.rand(6, 1, dtype=torch.float64) * 5
    scheme = dl.Scheme.parse(f"int8/channel/percentile:{p}")
    got = scheme.compute_scales(x).reshape(-1)
    want = torch.quantile(x.abs(), p / 100, dim=1) / 127
    assert torch.equal(got, want.float().double())  # (scales are stored as fp32)
    whole = dl.Scheme.parse(f"e4m3/tensor/percentile:{p}").compute_scales(x.float())
    assert whole.item() == float(np.float32(torch.quantile(x.float().abs().reshape(-1).double(), p / 100) / 448))


def test_percentile_spec_is_canonical_and_round_trips():
    s = dl.Scheme.parse("int8/tensor/percentile:99.99")
    assert str(s) == "int8/tensor/percentile:99.99" and dl.Scheme.parse(str(s)) == s
    assert str(dl.Scheme.parse("int8/tensor/Percentile:099.990")) == "int8/tensor/percentile:99.99"
    assert str(dl.Scheme.parse("int8/tensor/percentile:100.0")) == "int8/tensor/percentile:100"
    assert dl.Scheme.parse("int8/tensor/percentile:99.9") != s
    assert dl.Scheme(format="int8", scale=Percentile(99.99)) == s and hash(s) == hash(dl.Scheme.parse(str(s)))
    assert "percentile" in RULE_FAMILIES and "percentile" not in RULES


@pytest.mark.parametrize("bad", ["percentile", "percentile:", "percentile:0", "percentile:101", "percentile:x",
                                 "percentile:nan", "entropy:3", "perc:99"])
def test_bad_rule_arguments_name_the_value_and_the_choices(bad):
    with pytest.raises(ValueError, match="percentile") as e:
        dl.Scheme.parse(f"int8/tensor/{bad}")
    assert bad.split(":")[0] in str(e.value) or "valid" in str(e.value)


def test_percentile_of_mostly_zero_row_falls_back_to_absmax():
    x = torch.zeros(1000)
    x[3] = 2.0
    assert dl.Scheme.parse("int8/tensor/percentile:50").compute_scales(x).item() == pytest.approx(2 / 127)


# ---- entropy --------------------------------------------------------------------------------------------------


def _reference_kl(hist: np.ndarray, levels_of) -> np.ndarray:
    """TensorRT's divergence for every clip point, one candidate at a time in numpy: P = the kept bins with the
    clipped mass on the last; Q = the kept bins merged into the format's values and spread back evenly over the
    bins where P is nonzero; inf where P > 0 and Q = 0."""
    out = []
    for i in range(ENTROPY_MIN_BINS, ENTROPY_BINS + 1):
        p = hist[:i].astype(np.float64).copy()
        p[-1] += hist[i:].sum()
        _, group = np.unique(levels_of(i), return_inverse=True)  # bins that round to one value of the format
        mass = np.bincount(group, weights=hist[:i])
        count = np.bincount(group, weights=(p > 0).astype(float))
        q = np.where(p > 0, mass[group] / np.maximum(count[group], 1), 0.0)
        p, q = p / p.sum(), q / q.sum()
        nz = p > 0
        with np.errstate(divide="ignore"):
            out.append(float(np.sum(p[nz] * np.log(p[nz] / q[nz]))))
    return np.array(out)


@pytest.mark.parametrize("spec", ["int8", "posit(6,1)", "e2m1", "nf4"])
def test_entropy_finds_the_least_divergent_clip_point(spec):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.laplace(size=20000), rng.normal(scale=30.0, size=40)])  # a body and far outliers
    scheme = dl.Scheme.parse(f"{spec}/tensor/entropy")
    s = scheme.compute_scales(torch.tensor(x)).item()
    a = np.abs(x)
    amax = a.max()
    hist = np.bincount(np.minimum(np.floor(a / amax * ENTROPY_BINS), ENTROPY_BINS - 1).astype(int),
                       minlength=ENTROPY_BINS)
    fmax = scheme.element_range.max
    zp = scheme.element_range.zero_point

    kept = np.arange(ENTROPY_MIN_BINS, ENTROPY_BINS + 1)[:, None]
    centres = torch.tensor((np.arange(ENTROPY_BINS)[None, :] + 0.5) / kept * fmax)  # every candidate at once
    levels = (scheme.format.quantize(centres + zp) - zp).numpy()
    kl = _reference_kl(hist, lambda i: levels[i - ENTROPY_MIN_BINS, :i])
    best = int(np.argmin(kl)) + ENTROPY_MIN_BINS
    assert s == float(np.float32(best * amax / ENTROPY_BINS / fmax))
    if spec == "int8":  # evenly spaced values: the outliers are clipped
        assert best < ENTROPY_BINS // 4


@pytest.mark.parametrize("spec", FORMATS)
def test_entropy_keeps_a_uniform_histogram_whole(spec):
    """Uniform mass in every bin: no clip point but the last makes Q equal P (elsewhere the clipped mass piles
    onto the last bin), so the known optimum is no clipping: the scale maps the absmax to the max."""
    amax = 3.0
    x = ((torch.arange(ENTROPY_BINS, dtype=torch.float64) + 0.5) * amax / ENTROPY_BINS).repeat(5)
    x[-1] = amax
    scheme = dl.Scheme.parse(f"{spec}/tensor/entropy")
    assert scheme.compute_scales(x).item() == float(np.float32(amax / scheme.element_range.max))


def test_entropy_beats_absmax_on_outliers_and_handles_zero_rows():
    torch.manual_seed(0)
    x = torch.randn(3, 4096)
    x[0, :40] = torch.randn(40) * 30.0  # 1% outliers
    x[2] = 0.0
    s = dl.Scheme.parse("int8/channel/entropy").compute_scales(x).reshape(-1)
    amax = x[0].abs().max().item()
    assert s[2].item() == 1.0 and s[0] < amax / 127 / 2
    body = x[0].abs() < 4
    err = {r: float((dl.fake_quantize(x, f"int8/channel/{r}")[0, body] - x[0, body]).square().sum())
           for r in ("absmax", "entropy")}
    assert err["entropy"] < err["absmax"] / 4


# ---- static use -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["mse", "percentile:99.9", "entropy"])
def test_calibration_rules_are_static_scales_computed_once(rule, monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    batches = [torch.randn(32, 16) for _ in range(3)]
    scheme = dl.Scheme.parse(f"int8/tensor/{rule}")
    assert scheme.static
    calls = []
    original = type(scheme.rule).scales

    def counting(self, rows, rng, q):
        calls.append(rows.shape)
        return original(self, rows, rng, q)

    monkeypatch.setattr(type(scheme.rule), "scales", counting)
    dl.quantize_model(model, {"activations": str(scheme)}, calibration=batches, stats=False)
    assert [c[1] for c in calls] == [3 * 32 * 16, 3 * 32 * 8]  # once per layer, over every calibration input
    calls.clear()
    obs = []
    hook = model[2].register_forward_pre_hook(lambda m, a: obs.append(a[0]))
    y = model(batches[0])
    hook.remove()
    assert calls == [] and torch.isfinite(y).all()
    h = torch.relu(torch.nn.functional.linear(batches[0], model[0].weight, model[0].bias))
    assert not torch.equal(obs[0], h)  # the first layer's input was quantized
    dl.restore(model)


def test_entropy_is_quick_enough_for_calibration():
    assert RULES["entropy"].trials == ENTROPY_BINS - ENTROPY_MIN_BINS + 1
    assert math.isfinite(dl.Scheme.parse("uint8/tensor/entropy").compute_scales(torch.rand(1000)).item())
