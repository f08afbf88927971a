"""The float family against ml_dtypes (clipped to ±max first: ml_dtypes' overflow differs by type), bit-exact.

Compared as bit patterns of the quantized values (so the sign of zero counts) and as codes. ml_dtypes names
semantics by suffix: ``float8_e4m3fn`` is OCP E4M3 (our ``e4m3``), ``float8_e4m3`` is IEEE-like (our
``fp(4,3)``), ``fnuz``: finite, NaN at the negative-zero pattern, one (unsigned) zero.
"""

from __future__ import annotations

import ml_dtypes as md
import numpy as np
import pytest
import torch
from formats_helpers import probe_inputs, t

import dtypelab as dl

ORACLES = {
    "e4m3": md.float8_e4m3fn, "e5m2": md.float8_e5m2, "e3m2": md.float6_e3m2fn, "e2m3": md.float6_e2m3fn,
    "e2m1": md.float4_e2m1fn, "fp(3,4)": md.float8_e3m4, "bf16": md.bfloat16, "fp16": np.float16,
    "fp(4,3)": md.float8_e4m3, "e4m3fnuz": md.float8_e4m3fnuz, "e5m2fnuz": md.float8_e5m2fnuz,
}
HAS_INF = ("e5m2", "fp(3,4)", "bf16", "fp16", "fp(4,3)")


def _oracle(x: np.ndarray, dtype: type, vmax: float) -> np.ndarray:
    """ml_dtypes rounding of ``x`` (float32) to ``dtype``, read back as float64."""
    clipped = np.clip(x, np.float32(-vmax), np.float32(vmax)).astype(np.float32)
    return clipped.astype(dtype).astype(np.float64)


@pytest.mark.parametrize("spec", list(ORACLES))
@pytest.mark.parametrize("in_dtype", [np.float32, np.float64])
def test_float_matches_ml_dtypes_bit_exact(spec: str, in_dtype: type) -> None:
    f = dl.fmt(spec)
    x = probe_inputs(f.values().numpy(), n_random=50_000, dtype=np.float32)
    x = np.concatenate([x, np.float32([0.0, -0.0, 1e-30, -1e-30, 1e-45, -1e-45])])
    # ml_dtypes' bfloat16 double-rounds float64 inputs through float32, so the oracle takes float32 inputs;
    # float64 inputs that are float32 values must give the same answer.
    ref = _oracle(x, ORACLES[spec], f.max)
    q = f.quantize(t(x.astype(in_dtype))).numpy().astype(np.float64)
    bad = np.flatnonzero(q.view(np.int64) != ref.view(np.int64))
    assert bad.size == 0, list(zip(x[bad[:5]], q[bad[:5]], ref[bad[:5]], strict=False))
    if f.bits <= 8:  # codes are the IEEE-style words ml_dtypes stores
        codes = f.encode(t(x.astype(in_dtype))).numpy()
        ref_codes = np.clip(x, -f.max, f.max).astype(ORACLES[spec]).view(np.uint8) & ((1 << f.bits) - 1)
        np.testing.assert_array_equal(codes, ref_codes)


@pytest.mark.parametrize("spec", list(ORACLES))
def test_float_every_code_decodes_like_ml_dtypes(spec: str) -> None:
    f = dl.fmt(spec)
    codes = np.arange(1 << f.bits)
    ours = f.decode(t(codes), torch.float64).numpy()
    with np.errstate(invalid="ignore"):
        theirs = _decode_with_ml_dtypes(codes, spec, f.bits)
    nan = np.isnan(theirs)
    np.testing.assert_array_equal(np.isnan(ours), nan)
    np.testing.assert_array_equal(ours[~nan].view(np.int64), theirs[~nan].view(np.int64))


def _decode_with_ml_dtypes(codes: np.ndarray, spec: str, bits: int) -> np.ndarray:
    if bits == 16:
        theirs = codes.astype(np.uint16).view(ORACLES[spec]).astype(np.float64)
    else:
        theirs = codes.astype(np.uint8).view(ORACLES[spec]).astype(np.float64)
    return theirs


@pytest.mark.parametrize("spec", list(ORACLES))
def test_float_specials(spec: str) -> None:
    f = dl.fmt(spec)
    info = md.finfo(ORACLES[spec]) if ORACLES[spec] is not np.float16 else np.finfo(np.float16)
    assert f.max == float(info.max)
    assert f.min_positive == float(info.smallest_subnormal)
    x = torch.tensor([np.nan, np.inf, -np.inf, 1e300, -1e300], dtype=torch.float64)
    q = f.quantize(x)
    assert torch.isnan(q[0])
    assert q[1:3].tolist() == ([np.inf, -np.inf] if spec in HAS_INF else [f.max, -f.max])
    assert q[3:].tolist() == [f.max, -f.max]  # finite overflow saturates
    if spec in ("e3m2", "e2m3", "e2m1"):
        with pytest.raises(ValueError, match="NaN"):
            f.encode(x)


@pytest.mark.parametrize("spec", list(ORACLES))
def test_nan_and_inf_codes_are_the_ones_ml_dtypes_writes(spec: str) -> None:
    """nan_code / inf_code derive from the parameters; ml_dtypes' own NaN and +inf encodings pin them."""
    f, dtype = dl.fmt(spec), ORACLES[spec]
    word = np.uint16 if f.bits == 16 else np.uint8
    with np.errstate(all="ignore"):
        theirs = _decode_with_ml_dtypes(np.arange(1 << f.bits), spec, f.bits)
        nan_word, inf_word = (int(v) for v in np.float32([np.nan, np.inf]).astype(dtype).view(word))
    if f.nan_code is None:
        assert not np.isnan(theirs).any()
    else:
        assert f.nan_code == nan_word & ((1 << f.bits) - 1)
    if spec in HAS_INF:
        assert f.inf_code == inf_word and theirs[f.inf_code] == np.inf
    else:
        assert f.inf_code is None and not np.isinf(theirs).any()


def test_ocp_constants() -> None:
    assert dl.fmt("e4m3").max == 448 and dl.fmt("e5m2").max == 57344 and dl.fmt("e3m2").max == 28
    assert dl.fmt("e2m3").max == 7.5
    assert dl.fmt("e4m3").min_positive == 2.0**-9 and dl.fmt("e5m2").min_positive == 2.0**-16
    v = dl.fmt("e2m1").values().tolist()
    assert [x for x in v if x >= 0] == [0, 0.5, 1, 1.5, 2, 3, 4, 6]
    assert str(dl.fmt("fp(5,2)")) == "e5m2" and str(dl.fmt("fp(8,7)")) == "bf16" and str(dl.fmt("fp(5,10)")) == "fp16"
