"""MX block formats are bit-exact with the OCP formula (REFERENCE.md section 1), elements through ml_dtypes."""

import math

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


def test_mx_needs_mx_element_and_blocks():
    with pytest.raises(ValueError, match="MX element format"):
        dl.Scheme(format="posit(8,1)", granularity="block:32", scale="mx")
    with pytest.raises(ValueError, match="block:32"):
        dl.Scheme(format="e4m3", granularity="tensor", scale="mx")
