"""MX block formats are bit-exact with the OCP formula (REFERENCE.md section 1), elements through ml_dtypes."""

import math
import re
from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest
import torch

import dtypelab as dl

EMAX = {"e4m3": 8, "e5m2": 15, "e3m2": 4, "e2m3": 2, "e2m1": 2, "int8": 0}
ML = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2, "e3m2": ml_dtypes.float6_e3m2fn,
      "e2m3": ml_dtypes.float6_e2m3fn, "e2m1": ml_dtypes.float4_e2m1fn}
MAX = {"e4m3": 448.0, "e5m2": 57344.0, "e3m2": 28.0, "e2m3": 7.5, "e2m1": 6.0}


def mx_reference(x: np.ndarray, element: str) -> np.ndarray:
    """Independent OCP MX quantize-dequantize of float32 blocks of 32 (rows of x)."""
    out = np.empty_like(x, dtype=np.float64)
    for i, block in enumerate(x.astype(np.float64)):
        amax = np.abs(block).max()
        amax = amax if amax > 0 else 2.0**-126
        e = math.floor(math.log2(amax)) - EMAX[element]
        scale = 2.0 ** max(e, -127)
        v = block / scale
        if element == "int8":
            k = np.clip(np.round(v * 64), -127, 127)  # np.round is half-to-even
            out[i] = k / 64 * scale
        else:
            out[i] = np.clip(v, -MAX[element], MAX[element]).astype(ML[element]).astype(np.float64) * scale
    return out


def blocks(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, 32)) * np.exp2(rng.integers(-30, 30, size=(200, 1)))
    x[0] = 0.0  # all-zero block
    x[1, :] = 1e-40  # subnormal float32 block
    x[2] = rng.standard_normal(32) * 1e30
    x[3, 5] = 448.0 * 2**10  # one large outlier
    return x.astype(np.float32)


@pytest.mark.parametrize("element", list(EMAX))
def test_mx_matches_ocp_formula(element):
    x = blocks(hash(element) % 1000)
    scheme = dl.Scheme(format=element, granularity="block:32", scale="mx")
    ref = mx_reference(x, element)
    fake = dl.fake_quantize(torch.from_numpy(x).double(), scheme).numpy()
    stored = dl.quantize(torch.from_numpy(x).double(), scheme).dequantize().numpy()
    np.testing.assert_array_equal(fake, ref)
    np.testing.assert_array_equal(stored, ref)


def test_mx_aliases_and_storage():
    qt = dl.quantize(torch.randn(8, 64), "mxfp8")
    assert qt.storage_bits == 8 * 64 * 8 + 16 * 8
    assert qt.storage_bits / qt.numel == 8.25
    assert dl.quantize(torch.randn(64), "mxfp4").storage_bits == 64 * 4 + 2 * 8


RULES = ["mx", "mx-ceil", "mx-even", "mx-rceil"]


def pow2_floor(a: Fraction) -> int:
    """The largest k with 2^k <= a (a > 0), in exact arithmetic."""
    k = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** k > a:
        k -= 1
    while Fraction(2) ** (k + 1) <= a:
        k += 1
    return k


def shared_exponent(amax: float, rule: str, top: Fraction, mbits: int) -> float:
    """The definitions (torchao 0.18's ScaleCalculationMode), for an element of max ``top`` (in its fixed-point
    units) with ``mbits`` fraction bits below its top binade: the E8M0 exponent, NaN above 127."""
    a = Fraction(amax) if amax > 0 else Fraction(2) ** -126  # all-zero block: as the OCP spec says
    emax, e = pow2_floor(top), pow2_floor(a)
    if rule == "mx":  # FLOOR
        k = e - emax
    elif rule == "mx-ceil":  # 2^ceil(log2(amax) - emax)
        k = (e if a == Fraction(2) ** e else e + 1) - emax
    elif rule == "mx-even":  # absmax rounded half up to mbits fraction bits, then FLOOR
        r = math.floor(a / Fraction(2) ** e * 2**mbits + Fraction(1, 2)) * Fraction(2) ** (e - mbits)
        k = pow2_floor(r) - emax
    else:  # RCEIL: the smallest 2^k with amax <= top * 2^k
        k = e - emax - 1
        while a > top * Fraction(2) ** k:
            k += 1
    return math.nan if k > 127 else float(max(k, -127))


def fp32_blocks(seed: int) -> np.ndarray:
    """Blocks of 32 over a wide range, with absmaxes at and beside powers of two, their EVEN ties (for 1 and 2
    fraction bits) and 14 * 2^k, 7/4 * 2^k (the maxes below), an all-zero and a subnormal block."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((300, 32)) * np.exp2(rng.integers(-140, 120, size=(300, 1)))
    heads = [np.float32(a * 2.0**k) for k in rng.integers(-130, 120, size=40) for a in (1, 1.75, 1.875)]
    heads = [h2 for h in heads for h2 in (np.nextafter(h, np.float32(0)), h, np.nextafter(h, np.float32(1e38)))]
    edge = rng.uniform(-1, 1, size=(len(heads), 32)) * np.array(heads, dtype=np.float64)[:, None]
    edge[:, 0] = heads
    x = np.concatenate([x, edge])
    x[0], x[1] = 0.0, 1e-40
    return x.astype(np.float32)


def round_fp32(v: np.ndarray) -> np.ndarray:
    """fp(3,2), written out: IEEE-like, bias 3, 2 fraction bits, subnormals (quantum 2^-4), max 1.75 * 2^3 = 14;
    round half to even (np.round), saturating."""
    v = np.clip(v, -14.0, 14.0)
    binade = np.floor(np.log2(np.maximum(np.abs(v), 2.0**-2)))
    quantum = np.exp2(binade - 2)
    return np.clip(np.round(v / quantum) * quantum, -14.0, 14.0)


ELEMENTS = {  # element: (its max in fixed-point units, fraction bits, unit, the element rounding written out)
    "fp(3,2)": (Fraction(14), 2, 1.0, round_fp32),
    "int4": (Fraction(7, 4), 2, 0.25, lambda t: np.round(np.clip(t, -7, 7))),  # k * 2^-2, |k| <= 7
}


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("element", list(ELEMENTS))
def test_mx_with_any_element_follows_the_definition(element, rule):
    top, mbits, unit, rounding = ELEMENTS[element]
    x = fp32_blocks(RULES.index(rule))
    k = np.array([shared_exponent(float(np.abs(b).max()), rule, top, mbits) for b in x.astype(np.float64)])
    s = np.exp2(k)[:, None] * unit  # s = X * unit: integer elements are fixed point, k * 2^-(n-2)
    with np.errstate(invalid="ignore"):
        ref = rounding(x.astype(np.float64) / s) * s
    scheme = dl.Scheme(format=element, granularity="block:32", scale=rule)
    assert scheme.element_range.emax == pow2_floor(top) and scheme.element_range.mbits == mbits
    for dtype in (torch.float32, torch.float64):  # the fused kernel and the generic path
        got = dl.fake_quantize(torch.from_numpy(x).to(dtype), scheme).double().numpy()
        np.testing.assert_array_equal(got, ref)
    scales = dl.quantize(torch.from_numpy(x), scheme).scales.numpy()
    np.testing.assert_array_equal(scales, s[:, 0])
    assert len(set(k.tolist())) > 100 and (k == -127).any()


def test_the_exponent_is_exact_for_float64_inputs():
    """Just below a power of two, float64's log2 rounds up to it (log2(256 (1 - 2^-53)) == 8.0): the
    exponent comes from frexp instead, so FLOOR gives 2^(7 - 8), not 2^0, and CEIL 2^0."""
    x = torch.zeros(32, dtype=torch.float64)
    x[3] = 256 * (1 - 2.0**-53)
    assert dl.Scheme.parse("e4m3/block:32/mx").scale(x).scales.tolist() == [0.5]
    assert dl.Scheme.parse("e4m3/block:32/mx-ceil").scale(x).scales.tolist() == [1.0]
    x[3] = 448 * (1 + 2.0**-52)
    assert dl.Scheme.parse("e4m3/block:32/mx-rceil").scale(x).scales.tolist() == [2.0]


@pytest.mark.parametrize("rule", RULES)
def test_mx_takes_any_signed_element_and_blocks(rule):
    for element in ("e4m3", "fp(3,2)", "e3m4", "int4", "int16", "bf16") + (() if rule == "mx-even" else
                                                                          ("posit(8,1)", "posit(32,2)", "nf4")):
        scheme = dl.Scheme(format=element, granularity="block:32", scale=rule)
        assert dl.Scheme.parse(str(scheme)) == scheme and str(scheme.storage) == "e8m0"
    for element in ("uint8", "e8m0"):
        with pytest.raises(ValueError, match=f"{rule} scaling needs a signed element format.*got {re.escape(element)}"):
            dl.Scheme(format=element, granularity="block:32", scale=rule)
    with pytest.raises(ValueError, match="block:32"):
        dl.Scheme(format="e4m3", granularity="tensor", scale=rule)


@pytest.mark.parametrize("element", ["posit(8,1)", "lp(8,2,2,0)", "nf4", "dt8"])
def test_mx_even_needs_fraction_bits(element):
    match = r"mx-even rounds the absmax to the element's fraction bits.*got " + re.escape(element)
    with pytest.raises(ValueError, match=match):
        dl.Scheme(format=element, granularity="block:32", scale="mx-even")


def test_posit_elements_follow_the_definition():
    """posit(8,1): emax = 12 (maxpos 2^12), so under FLOOR a block's absmax lands in [2^12, 2^13) and clips to
    maxpos; RCEIL's X = 2^ceil(log2(absmax / 2^12)) clips nothing."""
    x = torch.tensor([[3.0, -0.7] + [0.0] * 30])
    posit = dl.fmt("posit(8,1)").quantize
    q = dl.fake_quantize(x, "posit(8,1)/block:32/mx")  # X = 2^(1 - 12); 3 / X = 6144 -> clipped to 4096
    assert q[0, :2].tolist() == [2.0, posit(torch.tensor([-0.7 * 2**11])).item() / 2**11]
    q = dl.fake_quantize(x, "posit(8,1)/block:32/mx-rceil")  # X = 2^-10; 3 / X = 3072, a tie -> 4096
    assert q[0, :2].tolist() == [4.0, posit(torch.tensor([-0.7 * 2**10])).item() / 2**10]
