"""The float families built on FloatFormat: IEEE P3109 binaryKpP, unsigned ueXmY, ml_dtypes' names.

Oracles: gfloat 0.5.2 (``format_info_p3109``, ``decode_ndarray``, ``round_ndarray`` with TiesToEven and sat=True,
``encode_ndarray``) for every P3109 format K = 2..16 that float64 holds; ml_dtypes for the names it defines.
Known differences, tested against the definition instead: gfloat's sat=True sends ±inf to ±max where our extended
formats keep ±inf; gfloat rounds negative inputs to unsigned formats as if they were signed (to negative values),
where ours saturate them to zero; ml_dtypes rounds e8m0 ties (1.5·2^k) up, ours go to the even code.
"""

from __future__ import annotations

import math

import gfloat
import ml_dtypes as md
import numpy as np
import pytest
import torch
from formats_helpers import float_value, t
from gfloat.formats import format_info_p3109
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import dtypelab as dl
from dtypelab.formats.float import Domain, FloatFormat, Signedness, p3109, unsigned_float

SIGNEDNESS = {"s": gfloat.Signedness.Signed, "u": gfloat.Signedness.Unsigned}
DOMAIN = {"e": gfloat.Domain.Extended, "f": gfloat.Domain.Finite}
WIDEST = {"s": 11, "u": 10}  # the largest K - P whose exponent range float64 holds
#: gfloat's FormatInfo.max is not a value of these two (binary2p1se: {0, ±inf, NaN}; binary2p2ue: {0, 0.5, inf,
#: NaN}), so its sat=True saturates to a non-value there; the oracle is clipped at the true max for them.
GFLOAT_MAX_WRONG = {"binary2p1se": 0.5, "binary2p2ue": 0.75}


def _p3109_specs(k: int) -> list[str]:
    return [f"binary{k}p{p}{s}{d}" for p in range(1, k + 1) for s in "su" for d in "ef" if k - p <= WIDEST[s]]


def _parts(spec: str) -> tuple[int, int, str, str]:
    k, rest = spec.removeprefix("binary").split("p")
    return int(k), int(rest[:-2]), rest[-2], rest[-1]


def _gfloat_info(spec: str) -> gfloat.FormatInfo:
    k, p, s, d = _parts(spec)
    return format_info_p3109(k, p, SIGNEDNESS[s], DOMAIN[d])


def _same(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Where two float64 arrays agree bit for bit (the sign of zero counts), NaN agreeing with NaN."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return (ours.view(np.int64) == theirs.view(np.int64)) | (np.isnan(ours) & np.isnan(theirs))


def _assert_same(x: np.ndarray, ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    bad = np.flatnonzero(~_same(ours, theirs))
    examples = list(zip(x[bad[:4]], ours[bad[:4]], theirs[bad[:4]], strict=True))
    assert bad.size == 0, f"{what}: {bad.size} differ (input, ours, theirs), e.g. {examples}"


# ---- P3109: decoding, names, constants ---------------------------------------------------------------------------

@pytest.mark.parametrize("k", range(2, 17))
def test_p3109_every_code_decodes_like_gfloat(k: int) -> None:
    """Every code of every P3109 format of width K (signed/unsigned × extended/finite, P = 1..K) decodes to
    gfloat's value; NaN and +inf sit at gfloat's codes; max, min positive and the name round-trip."""
    for spec in _p3109_specs(k):
        f, fi = dl.fmt(spec), _gfloat_info(spec)
        assert isinstance(f, FloatFormat) and f.bits == k and dl.fmt(str(f)) == f, spec
        codes = np.arange(1 << k)
        theirs = gfloat.decode_ndarray(fi, codes)
        _assert_same(codes, f.decode(t(codes), torch.float64).numpy(), theirs, spec)
        assert f.nan_code == fi.code_of_nan, spec
        assert f.inf_code == (fi.code_of_posinf if fi.num_posinfs else None), spec
        assert f.max == theirs[np.isfinite(theirs)].max() and fi.max == GFLOAT_MAX_WRONG.get(spec, f.max), spec
        positive = theirs[(theirs > 0) & np.isfinite(theirs)]
        assert f.min_positive == positive.min() if positive.size else math.isnan(f.min_positive), spec
        assert f.is_signed == (fi.is_signed and positive.size > 0), spec


def test_p3109_signed_formats_define_bias_nan_and_inf_as_the_report_does() -> None:
    """binary8p3: bias 16, NaN at 0x80, ±inf at 0x7F / 0xFF, no negative zero, max 49152, min 2^-17."""
    f = dl.fmt("binary8p3")
    assert f == dl.fmt("binary8p3se") == dl.fmt("p3109_k8p3se") == p3109(8, 3) and str(f) == "binary8p3se"
    assert (f.width, f.precision, f.bias, f.signed, f.domain, f.negative_zero, f.high_nans, f.subnormals) == (
        8, 3, 16, True, Domain.EXTENDED, False, 0, True)
    assert f.nan_code == 0x80 and f.inf_code == 0x7F and f.max == 49152 and f.min_positive == 2.0**-17
    assert f.decode(torch.tensor([0x7F, 0xFF, 0x80, 0x00]), torch.float64).tolist()[:2] == [math.inf, -math.inf]
    assert str(dl.fmt("binary8p3sf")) == "e5m2fnuz"  # the same parameters: one value, one (older) name
    u = dl.fmt("binary8p3ue")
    assert (u.bias, u.signed, u.high_nans, u.nan_code, u.inf_code) == (32, False, 1, 0xFF, 0xFE)


@pytest.mark.parametrize("k", [2, 3, 8, 16])
def test_p3109_precision_k_is_fixed_point(k: int) -> None:
    """Signed P = K: no exponent field, bias 0, every value a subnormal sig·2^(2-K) (gfloat's reading)."""
    f = dl.fmt(f"binary{k}p{k}sf")
    assert f.exponent_bits == 0 and f.bias == 0
    top = (1 << (k - 1)) - 1
    np.testing.assert_array_equal(f.values().numpy(), np.arange(-top, top + 1) * 2.0 ** (2 - k))
    e = dl.fmt(f"binary{k}p{k}se")
    assert e.inf_code == top and e.max == (top - 1) * 2.0 ** (2 - k)


def test_p3109_names_of_existing_formats_stay() -> None:
    """A P3109 spelling of a named format gives that format, which keeps its name (one name per value)."""
    assert dl.fmt("binary8p4sf") == dl.fmt("e4m3fnuz") and str(dl.fmt("binary8p4sf")) == "e4m3fnuz"
    assert dl.fmt("binary8p3sf") == dl.fmt("e5m2fnuz")
    for spec, name in [("e4m3", "e4m3"), ("fp(5,2)", "e5m2"), ("fp(4,3)", "fp(4,3)"), ("e8m0", "e8m0"),
                       ("e4m3fnuz", "e4m3fnuz"), ("fp(8,7)", "bf16"), ("fp(3,4)", "fp(3,4)"), ("e2m1", "e2m1")]:
        assert str(dl.fmt(spec)) == name


# ---- P3109: rounding against gfloat -------------------------------------------------------------------------------

def _probes(f: FloatFormat, rng: np.random.Generator, n_random: int) -> np.ndarray:
    """Every value, every midpoint of neighbours, their float64 and float32 neighbours, out-of-range and random
    log-uniform inputs of both signs; all finite (float64)."""
    v = f.values().numpy()
    low, high = v[:-1], v[1:]
    with np.errstate(over="ignore"):  # parts of the range of wide formats leave float32, and 2·max float64
        mids = np.where(np.abs(high) > 1, low / 2 + high / 2, (low + high) / 2)  # exact: no overflow, no lost bit
        pts = np.concatenate([v, mids])
        p32 = pts.astype(np.float32)
        p32 = np.concatenate([p32, np.nextafter(p32, np.float32(np.inf)), np.nextafter(p32, np.float32(-np.inf))])
        positive = v[v > 0]
        lo, hi = (math.log2(positive.min()) - 3, math.log2(f.max) + 3) if positive.size else (-4.0, 4.0)
        rand = np.exp2(rng.uniform(max(lo, -1074), min(hi, 1023), n_random))
        big = np.array([f.max * 1.0001, f.max * 2, 1e300, np.finfo(np.float64).max, np.finfo(np.float64).tiny, 0.0])
    x = np.concatenate([pts, np.nextafter(pts, np.inf), np.nextafter(pts, -np.inf), p32.astype(np.float64), rand,
                        big])
    x = np.concatenate([x, -x])
    return x[np.isfinite(x)]


def _gfloat_round(spec: str, fi: gfloat.FormatInfo, x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # gfloat's ldexp overflows to inf for huge inputs, then saturates
        theirs = gfloat.round_ndarray(fi, x, gfloat.RoundMode.TiesToEven, sat=True)
    if spec in GFLOAT_MAX_WRONG:
        vmax = dl.fmt(spec).max
        theirs = np.clip(theirs, -vmax, vmax) + 0.0  # + 0.0: -0 -> +0 (no negative zero)
    return theirs


def _check_rne_against_gfloat(spec: str, n_random: int) -> None:
    f, fi = dl.fmt(spec), _gfloat_info(spec)
    x = _probes(f, np.random.default_rng(_parts(spec)[0] * 1000 + _parts(spec)[1]), n_random)
    if not f.signed:  # gfloat rounds negatives of an unsigned format as if signed: compare x >= 0 only
        x = x[x >= 0]
    theirs = _gfloat_round(spec, fi, x)
    _assert_same(x, f.quantize(t(x)).numpy(), theirs, f"{spec} quantize (float64)")
    if f.bits <= 8:
        _assert_same(x, f.encode(t(x)).numpy(), gfloat.encode_ndarray(fi, theirs), f"{spec} encode")
    with np.errstate(over="ignore"):
        v, x32 = f.values().numpy(), x.astype(np.float32)
        fits = np.all(v.astype(np.float32).astype(np.float64) == v)
    if fits:  # every value is a float32: float32 inputs too
        x32 = x32[np.isfinite(x32)]
        theirs32 = _gfloat_round(spec, fi, x32.astype(np.float64))
        _assert_same(x32, f.quantize(t(x32)).numpy().astype(np.float64), theirs32, f"{spec} quantize (float32)")


NARROW = [s for k in range(2, 9) for s in _p3109_specs(k)]
#: Wide formats: every one is checked in the slow set; the fast set takes two per K, (se, uf) for even K and
#: (sf, ue) for odd K, with P spread over the valid range, so every K and every kind is rounded in the fast set.
WIDE = [s for k in range(9, 17) for s in _p3109_specs(k)]
_WIDE_P = {"se": lambda k: k, "sf": lambda k: k - 3 - k % 4, "ue": lambda k: k - 1 - k % 3,
           "uf": lambda k: max(k - 10, 1) + k % 2}
WIDE_FAST = [f"binary{k}p{_WIDE_P[kind](k)}{kind}" for k in range(9, 17) for kind in
             (("se", "uf") if k % 2 == 0 else ("sf", "ue"))]


@pytest.mark.parametrize("spec", NARROW)
def test_p3109_narrow_rne_matches_gfloat(spec: str) -> None:
    """K <= 8: every value, midpoint, neighbour and 10^5 random inputs round as gfloat's TiesToEven, sat=True."""
    _check_rne_against_gfloat(spec, 100_000)


@pytest.mark.parametrize("spec", WIDE_FAST)
def test_p3109_wide_rne_matches_gfloat(spec: str) -> None:
    _check_rne_against_gfloat(spec, 10_000)


@pytest.mark.slow
@pytest.mark.parametrize("spec", [s for s in WIDE if s not in WIDE_FAST])
def test_p3109_wide_rne_matches_gfloat_every_format(spec: str) -> None:
    _check_rne_against_gfloat(spec, 10_000)


def test_wide_fast_set_is_a_sample_of_every_width_and_kind() -> None:
    assert set(WIDE_FAST) <= set(WIDE) and len(set(WIDE_FAST)) == 16
    assert {_parts(s)[0] for s in WIDE_FAST} == set(range(9, 17))
    assert {_parts(s)[2] + _parts(s)[3] for s in WIDE_FAST} == {"se", "sf", "ue", "uf"}


@pytest.mark.parametrize("spec", ["binary8p3se", "binary8p3sf", "binary8p3ue", "binary8p3uf", "binary2p1se",
                                  "binary2p2ue", "binary16p8se", "binary16p9uf"])
def test_p3109_specials_follow_the_definition(spec: str) -> None:
    """NaN -> NaN (code 10…0 signed, the top code unsigned); ±inf stay ±inf in the extended domain and saturate
    to ±max in the finite one; negatives (and -inf) of an unsigned format saturate to zero; -0 -> +0 (no -0)."""
    f = dl.fmt(spec)
    x = torch.tensor([math.nan, math.inf, -math.inf, -0.0, 1e300, -1e300, -1.0], dtype=torch.float64)
    q = f.quantize(x)
    extended = f.domain == Domain.EXTENDED
    top = math.inf if extended else f.max
    want = [top, -top, 0.0, f.max, -f.max, -f.quantize(torch.tensor([1.0], dtype=torch.float64)).item()] \
        if f.signed else [top, 0.0, 0.0, f.max, 0.0, 0.0]
    assert math.isnan(q[0]) and q[1:].tolist() == want
    assert not torch.signbit(q[3])  # no negative zero
    codes = f.encode(x).tolist()
    assert codes[0] == f.nan_code == ((1 << (f.bits - 1)) if f.signed else (1 << f.bits) - 1)
    if extended:
        assert codes[1] == f.inf_code and (codes[2] == f.inf_code | 1 << (f.bits - 1) if f.signed else codes[2] == 0)


@settings(max_examples=40, deadline=None)
@given(k=st.integers(2, 10), data=st.data(), signedness=st.sampled_from(list(Signedness)),
       domain=st.sampled_from(list(Domain)))
def test_p3109_quantize_is_idempotent_monotone_and_in_the_value_set(k: int, data: st.DataObject,
                                                                    signedness: Signedness, domain: Domain) -> None:
    p = data.draw(st.integers(max(1, k - WIDEST[signedness.value]), k), label="p")
    f = p3109(k, p, signedness, domain)
    x = np.sort(np.array(data.draw(st.lists(st.floats(allow_nan=False, allow_infinity=True), min_size=1,
                                            max_size=50), label="x"), dtype=np.float64))
    q = f.quantize(t(x)).numpy()
    assert np.all(q[1:] >= q[:-1])  # monotone (x sorted)
    allowed = np.concatenate([f.values().numpy(), [math.inf, -math.inf] if domain == Domain.EXTENDED else []])
    assert np.isin(q, allowed).all()
    np.testing.assert_array_equal(f.quantize(t(q)).numpy(), q)  # idempotent
    v = f.values().numpy()
    np.testing.assert_array_equal(f.quantize(t(v)).numpy(), v)  # every value passes unchanged


# ---- unsigned minifloats ueXmY ------------------------------------------------------------------------------------

def _gfloat_ue(e: int, m: int) -> gfloat.FormatInfo:
    return gfloat.FormatInfo(f"ue{e}m{m}", e + m, m + 1, bias=(1 << (e - 1)) - 1, is_signed=False,
                             domain=gfloat.Domain.Finite, has_nz=False, num_high_nans=1, has_subnormals=True,
                             is_twos_complement=False)


@pytest.mark.parametrize(("e", "m"), [(4, 3), (5, 3), (5, 2), (3, 2), (8, 0), (2, 1), (1, 1), (6, 6), (10, 2)])
def test_unsigned_minifloats_decode_and_round_like_their_definition(e: int, m: int) -> None:
    """ueXmY: no sign, bias 2^(X-1)-1, finite, one NaN at the top code, subnormals; read from the bit string
    (the shared reference) and rounded as gfloat rounds the same parameters."""
    f = dl.fmt(f"ue{e}m{m}")
    assert f == unsigned_float(e, m) and str(f) == f"ue{e}m{m}" and f.bits == e + m and not f.is_signed
    codes = np.arange(1 << f.bits)
    want = np.array([float_value(int(c), e + m, m + 1, (1 << (e - 1)) - 1, False, False, False, 1, True)
                     for c in codes])
    _assert_same(codes, f.code_values(), want, str(f))
    fi = _gfloat_ue(e, m)
    _assert_same(codes, f.code_values(), gfloat.decode_ndarray(fi, codes), str(f))
    x = _probes(f, np.random.default_rng(e * 100 + m), 20_000)
    x = x[x >= 0]
    with np.errstate(over="ignore"):
        theirs = gfloat.round_ndarray(fi, x, gfloat.RoundMode.TiesToEven, sat=True)
    _assert_same(x, f.quantize(t(x)).numpy(), theirs, str(f))
    assert f.nan_code == (1 << f.bits) - 1 and f.inf_code is None
    q = f.quantize(torch.tensor([-3.0, -math.inf, math.inf, math.nan], dtype=torch.float64))
    assert q[:3].tolist() == [0.0, 0.0, f.max] and math.isnan(q[3])


def test_ue4m3_is_nvfp4s_block_scale() -> None:
    """UE4M3: 7 bits, max 448 (1.75·2^8), smallest subnormal 2^-9, the positive half of OCP E4M3."""
    f = dl.fmt("ue4m3")
    assert f.bits == 7 and f.max == 448 and f.min_positive == 2.0**-9 and f.nan_code == 0x7F
    e4m3 = dl.fmt("e4m3").values().numpy()
    np.testing.assert_array_equal(f.values().numpy(), e4m3[e4m3 >= 0])


# ---- ml_dtypes names ----------------------------------------------------------------------------------------------

ML_DTYPES = {
    "float8_e4m3fn": ("e4m3", md.float8_e4m3fn), "float8_e4m3": ("fp(4,3)", md.float8_e4m3),
    "float8_e5m2": ("e5m2", md.float8_e5m2), "float8_e4m3fnuz": ("e4m3fnuz", md.float8_e4m3fnuz),
    "float8_e5m2fnuz": ("e5m2fnuz", md.float8_e5m2fnuz), "float8_e8m0fnu": ("e8m0", md.float8_e8m0fnu),
    "float8_e3m4": ("fp(3,4)", md.float8_e3m4), "float6_e3m2fn": ("e3m2", md.float6_e3m2fn),
    "float6_e2m3fn": ("e2m3", md.float6_e2m3fn), "float4_e2m1fn": ("e2m1", md.float4_e2m1fn),
}


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_ml_dtypes_names_are_aliases_that_decode_and_round_like_ml_dtypes(name: str) -> None:
    """Each ml_dtypes type name is our format of that name: every code decodes alike; random inputs (clipped
    to ±max: ml_dtypes' overflow differs by type) round alike, e8m0 away from its ties (see below)."""
    ours, dtype = ML_DTYPES[name]
    f = dl.fmt(name)
    assert f == dl.fmt(ours) and str(f) == ours
    codes = np.arange(1 << f.bits)
    with np.errstate(invalid="ignore"):
        theirs = codes.astype(np.uint8).view(dtype).astype(np.float64)
    _assert_same(codes, f.decode(t(codes), torch.float64).numpy(), theirs, name)
    rng = np.random.default_rng(len(name))
    x = np.exp2(rng.uniform(math.log2(f.min_positive) - 2, math.log2(f.max) + 1, 100_000)).astype(np.float32)
    x = x * (rng.integers(0, 2, x.size) * 2 - 1).astype(np.float32) if f.is_signed else x
    if name == "float8_e8m0fnu":
        x = x[np.frexp(x.astype(np.float64))[0] != 0.75]  # not the ties 1.5·2^k
    want = np.clip(x, np.float32(-f.max if f.is_signed else f.min_positive), np.float32(f.max)).astype(dtype)
    _assert_same(x, f.quantize(t(x)).numpy().astype(np.float64), want.astype(np.float64), name)


def test_e8m0_ties_go_to_even_where_ml_dtypes_rounds_up() -> None:
    """The known difference: 1.5·2^k lies halfway between 2^k and 2^(k+1); ml_dtypes rounds up, we go to the even
    code (2^k when k + 127 is even)."""
    f = dl.fmt("float8_e8m0fnu")
    k = np.arange(-120, 120)
    x = (1.5 * np.exp2(k)).astype(np.float32)
    theirs = x.astype(md.float8_e8m0fnu).astype(np.float64)
    np.testing.assert_array_equal(theirs, np.exp2(k + 1.0))
    ours = f.quantize(t(x)).numpy().astype(np.float64)
    np.testing.assert_array_equal(ours, np.exp2(np.where((k + 127) % 2 == 0, k, k + 1).astype(np.float64)))
    assert (f.encode(t(x)).numpy() % 2 == 0).all()


def test_e4m3_name_clash_is_resolved_as_documented() -> None:
    """ml_dtypes' float8_e4m3 is IEEE-like with infinities (our fp(4,3), max 240); our e4m3 is OCP's
    (ml_dtypes' float8_e4m3fn, max 448)."""
    assert dl.fmt("float8_e4m3") == dl.fmt("fp(4,3)") != dl.fmt("e4m3") == dl.fmt("float8_e4m3fn")
    assert dl.fmt("float8_e4m3").max == 240 and dl.fmt("float8_e4m3").inf_code == 0x78 and dl.fmt("e4m3").max == 448


# ---- registry, CLI, bad input -------------------------------------------------------------------------------------

def test_new_forms_are_registered_and_listed() -> None:
    forms = dl.formats.valid_forms().split(" | ")
    for form in ("binaryKpP[s|u][e|f]", "p3109_kKpP{s|u}{e|f}", "ueXmY", "float8_e4m3fn", "float8_e8m0fnu"):
        assert form in forms


def test_the_formats_command_lists_the_new_families() -> None:
    from dtypelab.cli import app

    result = CliRunner().invoke(app, ["formats"], catch_exceptions=False)
    assert result.exit_code == 0
    rows = {line.split("|")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("|")}
    for name in ("binary8p3se", "binary8p4se", "binary8p3ue", "ue4m3", "e4m3"):
        assert name in rows, name
    assert rows["ue4m3"].split("|")[3].strip() == "448" and rows["binary8p3se"].split("|")[3].strip() == "49152"
    result = CliRunner().invoke(app, ["formats", "-f", "binary8p4sf", "-f", "float8_e4m3"], catch_exceptions=False)
    assert result.exit_code == 0 and "e4m3fnuz" in result.stdout and "fp(4,3)" in result.stdout


@pytest.mark.parametrize(("spec", "words"), [
    ("binary1p1", "2..16"), ("binary17p3", "2..16"), ("binary8p9", "1..8"), ("binary8p0", "1..8"),
    ("binary16p2se", "at most 11"), ("binary16p5ue", "at most 10"), ("ue0m3", "1 <= X <= 10"),
    ("ue11m2", "1 <= X <= 10"), ("ue9m8", "2..16"), ("ue1m0", "2..16"), ("p3109_k1p1se", "2..16"),
])
def test_bad_family_specs_name_the_valid_range(spec: str, words: str) -> None:
    with pytest.raises(ValueError, match=words.replace(".", r"\.").replace("[", r"\[")):
        dl.fmt(spec)


@pytest.mark.parametrize(("call", "words"), [
    (lambda: p3109(8, 3, "x"), "signedness"), (lambda: p3109(8, 3, "s", "wide"), "domain"),
    (lambda: p3109(8.0, 3), "integers"), (lambda: p3109(True, 3), "integers"),
    (lambda: FloatFormat(8, 8, 0, negative_zero=False, subnormals=False), "no exponent field"),
    (lambda: FloatFormat(8, 9, 0), "precision"), (lambda: FloatFormat(8, 9, 0, signed=False, negative_zero=False),
                                                  "precision must be in 1..8"),
])
def test_bad_family_parameters_raise_naming_the_parameter(call, words: str) -> None:
    with pytest.raises((ValueError, TypeError), match=words):
        call()


def test_existing_formats_keep_their_values_and_names() -> None:
    """Widening the parameter checks (P = K, a lone finite value) left every named format as it was."""
    pins = {"e4m3": (448.0, 2.0**-9, 253), "e5m2": (57344.0, 2.0**-16, 247), "fp(4,3)": (240.0, 2.0**-9, 239),
            "e4m3fnuz": (240.0, 2.0**-10, 255), "e8m0": (2.0**127, 2.0**-127, 255), "e2m1": (6.0, 0.5, 15),
            "bf16": (float(torch.finfo(torch.bfloat16).max), 2.0**-133, 65279)}
    for spec, (vmax, vmin, count) in pins.items():
        f = dl.fmt(spec)
        assert (f.max, f.min_positive, len(f.values())) == (vmax, vmin, count), spec
