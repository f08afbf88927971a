"""Rounding modes, overflow policies and subnormal flushing, against gfloat and against the definitions.

gfloat (Graphcore) is the oracle for the float family: every deterministic mode it shares with us (toward zero,
toward ±inf, nearest even, nearest away) under both of its saturation settings (``sat=True`` is our
``satfinite``, ``sat=False`` our ``ovfinf``), and its ``StochasticFastest`` mode, which is the truncated k-bit
stochastic rounding of P3109, fed with our random bits. Other families (posits, LP, integers, codebooks) are
checked against references written here from the definitions, on their value lists.
"""

from __future__ import annotations

import math
from fractions import Fraction

import gfloat
import gfloat.formats
import gfloat.types
import numpy as np
import pytest
import torch
from formats_helpers import probe_inputs
from gfloat import RoundMode, round_ndarray
from gfloat.types import Domain as GfloatDomain
from hypothesis import given, settings
from hypothesis import strategies as st

import dtypelab as dl
from dtypelab.formats.float import Domain, FloatFormat
from dtypelab.kernels.backend import REFERENCE
from dtypelab.kernels.cpu import BACKEND
from dtypelab.kernels.random import draw_seed, words
from dtypelab.kernels.rounding import Rounding

GFLOAT_MODES = {"rz": RoundMode.TowardZero, "rd": RoundMode.TowardNegative, "ru": RoundMode.TowardPositive,
                "rne": RoundMode.TiesToEven, "rna": RoundMode.TiesToAway}
GFLOAT_POLICIES = {"satfinite": True, "ovfinf": False}
DETERMINISTIC = ("rne", "rna", "rz", "ru", "rd", "ro")


def _gfloat_infos() -> list:
    infos = [gfloat.formats.format_info_ocp_e4m3, gfloat.formats.format_info_ocp_e5m2,
             gfloat.formats.format_info_ocp_e3m2, gfloat.formats.format_info_ocp_e2m3,
             gfloat.formats.format_info_ocp_e2m1, gfloat.formats.format_info_binary16,
             gfloat.formats.format_info_bfloat16]
    shapes = [(k, p) for k in range(2, 9) for p in range(1, k + 1)] + [(10, 4), (12, 7), (16, 8), (16, 11)]
    for k, p in shapes:
        for signedness in gfloat.types.Signedness:
            for domain in GfloatDomain:
                infos.append(gfloat.formats.format_info_p3109(k, p, signedness, domain))
    return infos


def ours(fi) -> FloatFormat:
    """Our float with gfloat's FormatInfo parameters (the float family is those parameters); P3109 formats are
    also reached by their names."""
    if fi.name.startswith("p3109_"):
        return dl.fmt(fi.name)
    return FloatFormat(fi.k, fi.precision, fi.bias, signed=fi.is_signed,
                       domain=Domain.EXTENDED if fi.domain == GfloatDomain.Extended else Domain.FINITE,
                       negative_zero=fi.has_nz, high_nans=fi.num_high_nans, subnormals=fi.has_subnormals)


INFOS = _gfloat_infos()


def _inputs(f: FloatFormat, fi, n_random: int = 3000, dtype: type = np.float64) -> np.ndarray:
    values = f.values().numpy()
    if values.size < 2:  # binary2p1: zero is its only finite value
        values = np.array([-1.0, 0.0, 1.0])
    x = probe_inputs(values, n_random=n_random, dtype=dtype).astype(np.float64)
    if not fi.is_signed:  # gfloat does not define negative inputs to unsigned formats
        x = x[x >= 0]
    return np.concatenate([x, [np.inf, -np.inf] if fi.is_signed else [np.inf]])


def _same(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    return ((got == want) & (np.signbit(got) == np.signbit(want))) | (np.isnan(got) & np.isnan(want))


def _gfloat(fi, x: np.ndarray, mode: RoundMode, sat: bool, *args) -> np.ndarray | None:
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            return round_ndarray(fi, x, mode, sat, *args)
        except ValueError:  # sat=False on a format with neither inf nor NaN: we refuse it too (tested below)
            return None


def _clipped(want: np.ndarray, f: FloatFormat, fi) -> np.ndarray:
    """gfloat's FormatInfo.max is not a value of binary2p1se or binary2p2ue (0.5 and 0.75; a gfloat defect): its
    results there are clipped at the true max."""
    if fi.max == f.max:
        return want
    return np.where(np.isfinite(want) & (np.abs(want) > f.max), np.copysign(f.max, want) + 0.0, want)


@pytest.mark.parametrize("fi", INFOS, ids=lambda fi: fi.name)
def test_deterministic_modes_match_gfloat(fi) -> None:
    f = ours(fi)
    x = _inputs(f, fi, n_random=50_000 if fi.k <= 8 else 5_000)  # both signs: 10^5 random inputs for K <= 8
    for mode, gmode in GFLOAT_MODES.items():
        for policy, sat in GFLOAT_POLICIES.items():
            want = _gfloat(fi, x, gmode, sat)
            if want is None:
                with pytest.raises(ValueError, match="neither infinities nor NaN"):
                    f.quantize(torch.from_numpy(x), rounding=f"{mode}+{policy}")
                continue
            got = f.quantize(torch.from_numpy(x), rounding=f"{mode}+{policy}").numpy()
            bad = ~_same(got, _clipped(want, f, fi))
            assert not bad.any(), (mode, policy, x[bad][:5], got[bad][:5], want[bad][:5])


@pytest.mark.parametrize("fi", INFOS[:7] + INFOS[-24:], ids=lambda fi: fi.name)
@pytest.mark.parametrize("k", [1, 3, 8, 13])
def test_stochastic_matches_gfloat_truncated_mode(fi, k: int) -> None:
    """gfloat's StochasticFastest (``delta + r * 2^-k >= 1``) is the truncated k-bit rule; it sums in float64, so it
    is compared on float32 inputs, whose remainders are short enough for that sum to be exact."""
    f = ours(fi)
    x = _inputs(f, fi, dtype=np.float32)
    x = x[~np.isfinite(x) | (np.abs(x) > 2.0**-100) | (x == 0)]
    for policy, sat in GFLOAT_POLICIES.items():
        seed = draw_seed(torch.Generator().manual_seed(k))
        r = (words(seed, x.size) >> np.uint64(64 - k)).astype(np.int64)
        want = _gfloat(fi, x, RoundMode.StochasticFastest, sat, r, k)
        if want is None:
            continue
        got = f.quantize(torch.from_numpy(x), rounding=f"sr{k}+{policy}",
                         generator=torch.Generator().manual_seed(k)).numpy()
        bad = ~_same(got, _clipped(want, f, fi))
        assert not bad.any(), (policy, x[bad][:5], got[bad][:5], want[bad][:5])


# ---- references from the definitions, for every family ---------------------------------------------------------

FAMILIES = ["posit(6,1)", "posit(8,0)", "lp(8,2,2,0)", "int8", "uint4", "dt8", "nf4", "codebook(-1,-0.3,0.2,0.9)",
            "e4m3", "e5m2", "e3m2", "fp16", "e4m3fnuz", "e8m0"]


def _sorted_values(f: dl.Format) -> tuple[np.ndarray, np.ndarray]:
    """Finite values in order (-0.0 before +0.0) and their codes, straight from code_values()."""
    v = f.code_values()
    codes = np.arange(len(v))
    keep = np.isfinite(v)
    v, codes = v[keep], codes[keep]
    order = np.lexsort((~np.signbit(v), v))
    return v[order], codes[order]


def reference(f: dl.Format, x: np.ndarray, mode: str) -> np.ndarray:
    """The definition of each deterministic mode on the value list, saturating: rd the largest value <= x, ru the
    smallest >= x (-0.0 counts below +0.0), rz one of them by the sign of x (between a codebook's negative and
    positive neighbours of zero, where it has no zero: the one of x's sign), ro the neighbour with the odd code."""
    v, codes = _sorted_values(f)
    lo = np.clip(np.searchsorted(v, x, side="left") - 1, 0, len(v) - 1)  # last value < x (or the lowest)
    hi = np.clip(np.searchsorted(v, x, side="right"), 0, len(v) - 1)  # first value > x (or the highest)
    lo = np.where(v[lo] > x, hi, lo)  # below the lowest value: saturate
    hi = np.where(v[hi] < x, lo, hi)
    negative = np.signbit(x)
    toward = np.where(negative != ((v[lo] < 0) & (v[hi] > 0)), hi, lo)
    odd_lo, odd_hi = codes[lo] % 2 == 1, codes[hi] % 2 == 1
    odd = np.where(odd_lo & ~odd_hi, lo, np.where(odd_hi & ~odd_lo, hi, toward))
    out = v[{"rd": lo, "ru": hi, "rz": toward, "ro": odd}[mode]]
    exact = np.isin(x, v)  # a value stays, as the zero of its sign where the format has both
    has_negative_zero = bool((np.signbit(v) & (v == 0)).any())
    kept = np.where((x == 0) & ~has_negative_zero, 0.0, x)
    return np.where(exact, kept, out)


def _nearest_away_reference(f: dl.Format, x: np.ndarray) -> np.ndarray:
    """Nearest, ties to the larger magnitude: rne's result except at exact value midpoints (for formats whose
    rne is value-nearest; posits tie on bit patterns, tested on their own)."""
    got_rne = f.quantize(torch.from_numpy(x)).numpy()
    v, _ = _sorted_values(f)
    out = got_rne.copy()
    for i, xi in enumerate(x):
        lo, hi = v[v < xi], v[v > xi]
        tie = lo.size and hi.size and Fraction(float(xi)) * 2 == Fraction(float(lo[-1])) + Fraction(float(hi[0]))
        if xi not in v and tie:
            out[i] = hi[0] if xi > 0 else lo[-1]
    return out


@pytest.mark.parametrize("spec", FAMILIES)
def test_directed_and_odd_modes_match_definitions(spec: str) -> None:
    f = dl.fmt(spec)
    x = probe_inputs(f.values().numpy(), n_random=400)
    x = x[np.abs(x) <= 2 * f.max]  # overflow is tested on its own
    for mode in ("rd", "ru", "rz", "ro"):
        got = f.quantize(torch.from_numpy(x), rounding=mode).numpy()
        want = reference(f, x, mode)
        bad = ~_same(got, want)
        assert not bad.any(), (mode, x[bad][:5], got[bad][:5], want[bad][:5])


@pytest.mark.parametrize("spec", ["int8", "uint4", "e4m3", "e2m1", "codebook(-1,-0.3,0.2,0.9)", "nf4"])
def test_nearest_away_differs_from_even_only_on_ties(spec: str) -> None:
    f = dl.fmt(spec)
    x = probe_inputs(f.values().numpy(), n_random=400)
    got = f.quantize(torch.from_numpy(x), rounding="rna").numpy()
    assert _same(got, _nearest_away_reference(f, x)).all()


def test_posit_pattern_ties_go_away_from_zero() -> None:
    p = dl.fmt("posit(8,0)")
    # 1 + 1/64 is the pattern midpoint of 1 (0x40, even) and 1 + 1/32 (0x41): rne keeps 1, rna goes up.
    x = torch.tensor([1 + 1 / 64, -(1 + 1 / 64), 3 + 1 / 16], dtype=torch.float64)
    assert p.quantize(x).tolist() == [1.0, -1.0, 3.0]
    assert p.quantize(x, rounding="rna").tolist() == [1 + 1 / 32, -(1 + 1 / 32), 3 + 1 / 8]


# ---- properties ----------------------------------------------------------------------------------------------

@st.composite
def float_formats(draw):
    width = draw(st.integers(3, 10))
    precision = draw(st.integers(1, width - 2))
    bias = draw(st.integers(0, 2 ** (width - precision - 1)))
    extended = draw(st.booleans())
    return FloatFormat(width, precision, bias, domain=Domain.EXTENDED if extended else Domain.FINITE,
                       negative_zero=draw(st.booleans()), high_nans=draw(st.integers(0, 1)))


@settings(max_examples=40, deadline=None)
@given(float_formats(), st.sampled_from(DETERMINISTIC), st.integers(0, 2**31))
def test_deterministic_mode_properties(f: FloatFormat, mode: str, seed: int) -> None:
    values = f.values()
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(np.sort(rng.uniform(-1.5, 1.5, 2000) * f.max))
    q = f.quantize(x, rounding=mode)
    assert torch.equal(f.quantize(values, rounding=mode), values)  # every value stays (idempotent)
    assert bool(torch.isin(q, values).all())
    assert bool((torch.diff(q) >= 0).all())  # monotone
    assert torch.equal(f.quantize(q, rounding=mode), q)
    if mode == "rd":
        assert bool((q <= x)[x >= -f.max].all())
    if mode == "ru":
        assert bool((q >= x)[x <= f.max].all())
    if mode == "rz":
        assert bool((q.abs() <= x.abs()).all())


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["e4m3", "e5m2", "posit(8,1)", "int6", "lp(8,1,3,0)", "dt8", "e4m3fnuz"]),
       st.sampled_from([None, 1, 4, 16]), st.integers(0, 2**31))
def test_stochastic_returns_a_neighbour(spec: str, bits: int | None, seed: int) -> None:
    f = dl.fmt(spec)
    x = torch.from_numpy(np.random.default_rng(seed).uniform(-1.2, 1.2, 5000) * f.max)
    rounding = Rounding("sr", random_bits=bits)
    q = f.quantize(x, rounding=rounding, generator=torch.Generator().manual_seed(seed))
    down, up = f.quantize(x, rounding="rd"), f.quantize(x, rounding="ru")
    assert bool(((q == down) | (q == up)).all())
    assert torch.equal(f.quantize(f.values(), rounding=rounding), f.values())


@pytest.mark.parametrize("spec", ["e4m3", "posit(8,1)", "int4", "nf4"])
def test_stochastic_rounding_is_unbiased(spec: str) -> None:
    f = dl.fmt(spec)
    x = torch.from_numpy(np.random.default_rng(1).uniform(-0.9, 0.9, 1_000_000) * f.max)
    err = f.quantize(x, rounding="sr", generator=torch.Generator().manual_seed(7)) - x
    standard_error = float(err.std()) / math.sqrt(err.numel())
    assert abs(float(err.mean())) < 4 * standard_error
    nearest = f.quantize(x) - x
    assert float(err.abs().mean()) > float(nearest.abs().mean())  # it is not rounding to nearest


@pytest.mark.parametrize("k", [1, 2, 5, 32, None])
@pytest.mark.parametrize("spec", ["e4m3", "posit(8,1)", "int8", "dt8"])
def test_k_bit_probabilities_are_the_truncated_formula(spec: str, k: int | None) -> None:
    """Element by element, with the words the generator gives: away iff floor(delta 2^K) + top_K(word) >= 2^K."""
    f = dl.fmt(spec)
    x = np.random.default_rng(3).uniform(-1, 1, 3000) * f.max
    seed = draw_seed(torch.Generator().manual_seed(11))
    got = f.quantize(torch.from_numpy(x), rounding=Rounding("sr", random_bits=k),
                     generator=torch.Generator().manual_seed(11)).numpy()
    bits = 64 if k is None else k
    w = words(seed, x.size)
    toward = f.quantize(torch.from_numpy(x), rounding="rz").numpy()
    v = np.unique(f.values().numpy())
    for i, xi in enumerate(x):
        if xi == toward[i]:
            assert got[i] == xi
            continue
        j = int(np.searchsorted(v, toward[i]))
        if not 0 <= (j + 1 if xi > 0 else j - 1) < len(v):  # past the last value: saturated
            assert got[i] == toward[i]
            continue
        away = v[j + 1] if xi > 0 else v[j - 1]
        delta = (Fraction(abs(float(xi))) - Fraction(abs(float(toward[i])))) / (
            Fraction(abs(float(away))) - Fraction(abs(float(toward[i]))))
        if spec == "dt8":  # non-dyadic gaps: delta is a float64 quotient
            delta = Fraction((abs(xi) - abs(toward[i])) / (abs(away) - abs(toward[i])))
        goes = math.floor(delta * 2**bits) + (int(w[i]) >> (64 - bits)) >= 2**bits
        assert got[i] == (away if goes else toward[i]), (i, xi, delta)


def test_stochastic_is_reproducible_and_the_backends_agree() -> None:
    f = dl.fmt("e4m3")
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(0)) * 50
    a = f.quantize(x, rounding="sr8", generator=torch.Generator().manual_seed(5))
    b = f.quantize(x, rounding="sr8", generator=torch.Generator().manual_seed(5))
    c = f.quantize(x, rounding="sr8", generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(1)
    d = f.quantize(x, rounding="sr8")
    torch.manual_seed(1)
    assert torch.equal(d, f.quantize(x, rounding="sr8"))
    for spec, rounding in (("e4m3", "sr8+ovfinf"), ("posit(8,1)", "sr"), ("fp16", "sr3+daz+ftz"), ("dt8", "sr")):
        engine = dl.fmt(spec).engine_for(rounding)
        for what, dtype in (("value", torch.float32), ("code", engine.code_dtype)):
            fast, ref = torch.empty(x.shape, dtype=dtype), torch.empty(x.shape, dtype=dtype)
            BACKEND.stochastic(engine, x, fast, what, 123)
            REFERENCE.stochastic(engine, x, ref, what, 123)
            assert torch.equal(fast, ref), (spec, rounding, what)


def _bucket_ends_and_random_patterns(n: int) -> torch.Tensor:
    keys = np.arange(-2**15, 2**15, dtype=np.int64) << 16
    rng = np.random.default_rng(0)
    patterns = np.concatenate([keys, keys + 1, keys | 0xFFFF, rng.integers(-2**31, 2**31, n)]).astype(np.int32)
    return torch.from_numpy(patterns.view(np.float32))


@pytest.mark.parametrize(("spec", "rounding"), [
    ("e4m3", "sr8"), ("e4m3", "sr"), ("e5m2", "sr3+ovfinf"), ("e5m2", "sr+satpropagate"), ("int8", "sr8"),
    ("uint8", "sr"), ("e2m1", "sr20"), ("e4m3fnuz", "sr8"), ("bf16", "sr8+daz+ftz"), ("fp16", "sr+daz"),
    ("binary8p3se", "sr4"), ("binary8p4uf", "sr")])
def test_integer_stochastic_kernel_equals_the_reference(spec: str, rounding: str) -> None:
    """Grids with power-of-two gaps take the integer kernel for float32 inputs; it writes the reference's bits on
    every bucket's ends (the exact member, the next one, the last) and on a million random patterns."""
    engine = dl.fmt(spec).engine_for(rounding)
    assert engine.pow2_words is not None
    x = _bucket_ends_and_random_patterns(1_000_000)
    for what, dtype in (("value", torch.float32), ("code", engine.code_dtype)):
        fast, ref = torch.empty(x.shape, dtype=dtype), torch.empty(x.shape, dtype=dtype)
        nans = BACKEND.stochastic(engine, x, fast, what, 77)
        REFERENCE.stochastic(engine, x, ref, what, 77)
        assert torch.equal(fast.view(torch.int32) if dtype == torch.float32 else fast,
                           ref.view(torch.int32) if dtype == torch.float32 else ref), (what, spec, rounding)
        assert int(nans) == int(torch.isnan(x).sum())


@pytest.mark.parametrize("spec", ["posit(8,1)", "posit(16,2)", "nf4", "dt8", "lp(8,2,2,0)"])
def test_grids_whose_gaps_are_not_powers_of_two_keep_the_float_kernel(spec: str) -> None:
    assert dl.fmt(spec).engine_for("sr8").pow2_words is None


def test_half_precision_inputs_use_the_same_counters() -> None:
    f = dl.fmt("e4m3")
    x = (torch.randn(3_000_000, generator=torch.Generator().manual_seed(0)) * 30).bfloat16()  # > one chunk
    a = f.quantize(x, rounding="sr4", generator=torch.Generator().manual_seed(2))
    b = f.quantize(x.float(), rounding="sr4", generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.float(), b)


def test_encode_and_quantize_agree_in_every_mode() -> None:
    f = dl.fmt("e5m2")
    x = torch.randn(5000, generator=torch.Generator().manual_seed(0)) * 1e4
    for rounding in (*DETERMINISTIC, "sr5", "rne+ovfinf", "rne+satfinite+ftz"):
        codes = f.encode(x, rounding=rounding, generator=torch.Generator().manual_seed(1))
        q = f.quantize(x, rounding=rounding, generator=torch.Generator().manual_seed(1))
        assert _same(f.decode(codes).numpy(), q.numpy()).all(), rounding


# ---- overflow and subnormals -----------------------------------------------------------------------------------

def test_overflow_policies() -> None:
    inf = float("inf")
    x = torch.tensor([1e6, -1e6, inf, -inf, 460.0, 470.0])
    e4m3, e5m2, p = dl.fmt("e4m3"), dl.fmt("e5m2"), dl.fmt("posit(8,1)")
    assert e4m3.quantize(x).tolist() == [448.0, -448.0, 448.0, -448.0, 448.0, 448.0]
    assert e4m3.quantize(x, rounding="rne+satfinite").tolist() == [448.0, -448.0, 448.0, -448.0, 448.0, 448.0]
    prop = e4m3.quantize(x, rounding="rne+satpropagate")
    assert prop[:2].tolist() == [448.0, -448.0] and prop[2:4].isnan().all() and prop[4:].tolist() == [448.0, 448.0]
    ovf = e4m3.quantize(x, rounding="rne+ovfinf")  # 464 = midpoint of 448 and 480 (the next grid value)
    assert ovf[:5].isnan().tolist() == [True, True, True, True, False] and ovf[5].isnan()
    assert e5m2.quantize(x).tolist()[:4] == [57344.0, -57344.0, inf, -inf]
    assert e5m2.quantize(x, rounding="rne+satfinite").tolist()[:4] == [57344.0, -57344.0, 57344.0, -57344.0]
    assert e5m2.quantize(x, rounding="rne+ovfinf").tolist()[:4] == [inf, -inf, inf, -inf]
    assert e5m2.quantize(x, rounding="rz+ovfinf").tolist()[:2] == [57344.0, -57344.0]  # toward zero never overflows
    assert e5m2.quantize(x, rounding="ru+ovfinf").tolist()[:2] == [inf, -57344.0]
    assert e5m2.quantize(x, rounding="rd+ovfinf").tolist()[:2] == [57344.0, -inf]
    assert p.quantize(x, rounding="rne+satfinite").tolist()[:4] == [4096.0, -4096.0, 4096.0, -4096.0]
    assert p.quantize(x, rounding="rne+ovfinf")[:4].isnan().all()  # NaR
    assert p.quantize(x)[2:4].isnan().all()  # the posit rule: ±inf is NaR


def test_subnormal_flushing() -> None:
    f = dl.fmt("e4m3")  # smallest normal 2^-6, subnormals k * 2^-9
    mn = 2.0**-6
    x = torch.tensor([3 * 2.0**-9, -3 * 2.0**-9, mn * 0.99, mn, -mn, 0.3, 2.0**-10, 0.0], dtype=torch.float64)
    assert f.quantize(x).tolist()[:3] == [3 * 2.0**-9, -3 * 2.0**-9, mn]
    ftz = f.quantize(x, rounding="rne+ftz").tolist()
    assert ftz == [0.0, -0.0, mn, mn, -mn, 0.3125, 0.0, 0.0] and math.copysign(1, ftz[1]) < 0
    daz = f.quantize(x, rounding="rne+daz").tolist()  # mn * 0.99 is an input below mn: zero, not rounded up
    assert daz == [0.0, -0.0, 0.0, mn, -mn, 0.3125, 0.0, 0.0] and math.copysign(1, daz[1]) < 0
    assert f.quantize(x, rounding="ru+daz").tolist()[:3] == [0.0, -0.0, 0.0]
    assert f.quantize(x, rounding="ru").tolist()[6] == 2.0**-9
    assert f.quantize(x, rounding="sr+daz").tolist()[:3] == [0.0, -0.0, 0.0]
    fnuz = dl.fmt("e4m3fnuz")  # no negative zero: a flushed negative is +0
    assert fnuz.encode(torch.tensor([-2.0**-9]), rounding="rne+ftz").tolist() == [0]


def test_bad_rounding_input_is_refused_clearly() -> None:
    f = dl.fmt("e4m3")
    x = torch.ones(3)
    with pytest.raises(ValueError, match="unknown rounding mode 'nearest'.*rne"):
        f.quantize(x, rounding="nearest")
    with pytest.raises(ValueError, match=r"random_bits must be an integer in 1\.\.32"):
        f.quantize(x, rounding="sr33")
    with pytest.raises(ValueError, match=r"random_bits must be an integer in 1\.\.32"):
        Rounding("sr", random_bits=0)
    with pytest.raises(ValueError, match="random_bits applies to stochastic rounding only"):
        Rounding("rne", random_bits=8)
    with pytest.raises(ValueError, match="unknown overflow policy 'wrap'.*satfinite"):
        Rounding("rne", overflow="wrap")
    with pytest.raises(ValueError, match="bad rounding part 'ovfinf'"):
        Rounding.parse("rne+ovfinf+ovfinf")
    with pytest.raises(ValueError, match="int8 has neither infinities nor NaN.*saturate, satfinite"):
        dl.fmt("int8").quantize(x, rounding="rne+ovfinf")
    with pytest.raises(ValueError, match="posit.* has no subnormals to flush"):
        dl.fmt("posit(8,1)").quantize(x, rounding="rne+ftz")
    with pytest.raises(ValueError, match="round to nearest, ties to even, only"):
        dl.fmt("posit(32,2)").quantize(x, rounding="rz")
    with pytest.raises(TypeError, match="rounding spec must be a string"):
        f.quantize(x, rounding=3)


def test_rounding_strings_round_trip() -> None:
    for text in ("rne", "rna", "rz", "ru", "rd", "ro", "sr", "sr1", "sr32", "sr8+ovfinf", "rne+satfinite+daz+ftz",
                 "rz+satpropagate+ftz"):
        assert str(Rounding.parse(text)) == text
    assert Rounding.parse("stochastic8+ovfinf") == Rounding("sr", 8, "ovfinf")
    assert Rounding.parse("toward-negative") == Rounding("rd")
    assert Rounding.parse("") == Rounding.parse(None) == Rounding()
