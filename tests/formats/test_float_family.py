"""The float family: parameters alone define each format.

Random parameter sets decode like a bit-string reference written from the definition (formats_helpers.float_value);
E8M0 and the fnuz formats built from parameters match ml_dtypes; canonical strings round-trip; bad parameters
raise errors that name the parameter.
"""

from __future__ import annotations

import math

import ml_dtypes as md
import numpy as np
import pytest
import torch
from formats_helpers import float_formats, float_value, t
from hypothesis import given, settings

import dtypelab as dl
from dtypelab.formats import E8M0, Domain, FloatFormat, ieee


@settings(max_examples=60)
@given(float_formats(max_bits=10))
def test_code_values_follow_the_parameters(f: FloatFormat) -> None:
    """Every code's value (NaN, ±inf, ±0 included) is the bit-string reading of the parameters."""
    want = np.array([float_value(c, f.width, f.precision, f.bias, f.signed, f.domain == Domain.EXTENDED,
                                 f.negative_zero, f.high_nans, f.subnormals) for c in range(1 << f.width)])
    got = f.code_values()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    keep = ~np.isnan(want)
    np.testing.assert_array_equal(got[keep].view(np.int64), want[keep].view(np.int64))  # sign of zero counts
    assert f.nan_code is None if not np.isnan(want).any() else math.isnan(want[f.nan_code])
    assert f.inf_code is None if not np.isinf(want).any() else want[f.inf_code] == math.inf
    assert dl.fmt(str(f)) == f


def test_e8m0_every_code_decodes_like_ml_dtypes() -> None:
    f = dl.fmt("e8m0")
    assert f is E8M0 and str(f) == "e8m0" and f.bits == 8
    theirs = np.arange(256, dtype=np.uint8).view(md.float8_e8m0fnu).astype(np.float64)
    ours = f.decode(torch.arange(256), torch.float64).numpy()
    np.testing.assert_array_equal(ours, theirs)  # NaN at 255 in both (assert_array_equal matches NaNs)
    assert np.isnan(ours[255]) and not np.isnan(ours[:255]).any()
    np.testing.assert_array_equal(f.values().numpy(), 2.0 ** np.arange(-127, 128))
    info = md.finfo(md.float8_e8m0fnu)
    assert f.max == float(info.max) == 2.0**127 and f.min_positive == float(info.tiny) == 2.0**-127
    assert f.nan_code == 255 == int(np.float32(np.nan).astype(md.float8_e8m0fnu).view(np.uint8))
    assert f.inf_code is None and not f.is_signed


@pytest.mark.parametrize("in_dtype", [np.float32, np.float64])
def test_e8m0_quantize_and_encode_match_ml_dtypes_off_ties(in_dtype: type) -> None:
    """In range and away from the midpoints 1.5 * 2^k, e8m0 rounds as ml_dtypes does."""
    f = dl.fmt("e8m0")
    rng = np.random.default_rng(0)
    x = np.exp2(rng.uniform(-127, 127, 100_000)).astype(np.float32)
    x = np.concatenate([x, np.float32(2.0 ** np.arange(-127, 128)), np.float32([1.4, 1.6, 0.7, 3.1])])
    mantissa = np.frexp(x.astype(np.float64))[0] * 2
    x = x[mantissa != 1.5]
    theirs = x.astype(md.float8_e8m0fnu)
    q = f.quantize(t(x.astype(in_dtype))).numpy().astype(np.float64)
    np.testing.assert_array_equal(q, theirs.astype(np.float64))
    np.testing.assert_array_equal(f.encode(t(x.astype(in_dtype))).numpy(), theirs.view(np.uint8))


def test_e8m0_ties_go_to_the_even_code_and_out_of_range_saturates() -> None:
    """Our rule for every format (ml_dtypes rounds these ties up instead): 1.5 -> 2 (code 128), 3 -> 2 (128),
    6 -> 8 (130); zero and negatives -> 2^-127, beyond 2^127 and +inf -> 2^127, NaN -> code 255."""
    f = dl.fmt("e8m0")
    x = torch.tensor([1.5, 3.0, 6.0, 0.75, 0.0, -5.0, 1e300, math.inf, -math.inf], dtype=torch.float64)
    assert f.quantize(x).tolist() == [2.0, 2.0, 8.0, 0.5, 2.0**-127, 2.0**-127, 2.0**127, 2.0**127, 2.0**-127]
    assert f.encode(x).tolist() == [128, 128, 130, 126, 0, 0, 254, 254, 0]
    assert f.encode(torch.tensor([math.nan])).tolist() == [255]
    assert torch.isnan(f.decode(torch.tensor([255])))[0]


@pytest.mark.parametrize(("e", "m", "oracle"), [(4, 3, md.float8_e4m3fnuz), (5, 2, md.float8_e5m2fnuz)])
def test_fnuz_built_from_parameters_matches_ml_dtypes(e: int, m: int, oracle: type) -> None:
    f = FloatFormat(1 + e + m, m + 1, 1 << (e - 1), signed=True, domain=Domain.FINITE, negative_zero=False,
                    high_nans=0, subnormals=True)
    assert f == dl.fmt(f"e{e}m{m}fnuz") and str(f) == f"e{e}m{m}fnuz"
    with np.errstate(invalid="ignore"):
        theirs = np.arange(256, dtype=np.uint8).view(oracle).astype(np.float64)
    np.testing.assert_array_equal(f.code_values(), theirs)
    assert f.nan_code == 128


def test_ieee_and_ocp_are_instances_of_the_same_class() -> None:
    specs = ["e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "bf16", "fp16", "fp(3,4)", "e8m0", "e4m3fnuz"]
    assert {type(dl.fmt(s)) for s in specs} == {FloatFormat}
    assert dl.fmt("fp(4,3)") == ieee(4, 3) != dl.fmt("e4m3")  # ml_dtypes float8_e4m3 vs float8_e4m3fn
    assert dl.fmt("e4m3").inf_code is None and ieee(4, 3).inf_code == 0x78


@pytest.mark.parametrize("spec", ["e4m3", "fp(4,4)", "e8m0",
                                  "float(width=7,precision=3,bias=4,signed=0,domain=extended,negative_zero=0,"
                                  "high_nans=1,subnormals=1)"])
def test_canonical_strings_round_trip(spec: str) -> None:
    f = dl.fmt(spec)
    assert dl.fmt(str(f)) == f and str(dl.fmt(str(f))) == str(f)


def test_generic_float_spec_reads_every_field() -> None:
    f = dl.fmt("float(width=8, precision=4, bias=8, negative_zero=0, domain=finite)")
    assert f == dl.fmt("e4m3fnuz")
    assert str(FloatFormat(5, 2, 3, signed=False, domain=Domain.FINITE, negative_zero=False)) == (
        "float(width=5,precision=2,bias=3,signed=0,domain=finite,negative_zero=0,high_nans=0,subnormals=1)")


@pytest.mark.parametrize(("kwargs", "error", "word"), [
    ({"width": 17}, ValueError, "width"),
    ({"width": 1}, ValueError, "width"),
    ({"precision": 9}, ValueError, "precision"),
    ({"precision": 0}, ValueError, "precision"),
    ({"signed": False}, ValueError, "negative zero"),
    ({"high_nans": 200}, ValueError, "high_nans"),
    ({"high_nans": -1}, ValueError, "high_nans"),
    ({"bias": -2000}, ValueError, "float64"),
    ({"bias": 2.5}, TypeError, "bias"),
    ({"signed": 1}, TypeError, "signed"),
    ({"domain": "wide"}, ValueError, "domain"),
])
def test_bad_parameters_name_the_parameter(kwargs: dict, error: type, word: str) -> None:
    params = {"width": 8, "precision": 4, "bias": 7, **kwargs}
    with pytest.raises(error, match=word):
        FloatFormat(**params)


@pytest.mark.parametrize("bad", ["float(width=8)", "float(8,4,7)", "float(width=8,precision=4,bias=7,wat=1)",
                                 "float(width=8,width=8,precision=4,bias=7)", "float(width=x,precision=4,bias=7)",
                                 "fp(9,3)", "e9m9", "e8m1x"])
def test_bad_float_specs_raise_value_error(bad: str) -> None:
    with pytest.raises(ValueError):
        dl.fmt(bad)
