"""QTensor: packing round-trips, exact storage bits for every granularity, dequantize == fake_quantize."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import dtypelab as dl
from dtypelab.schemes.packing import pack, unpack


@given(st.integers(1, 16).flatmap(lambda w: st.tuples(st.just(w), st.lists(st.integers(0, (1 << w) - 1),
                                                                           max_size=200))))
def test_pack_unpack_round_trip(case):
    width, codes = case
    packed = pack(torch.tensor(codes, dtype=torch.int64), width)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(len(codes) * width / 8)
    assert unpack(packed, width, len(codes)).tolist() == codes


SCHEMES = ["posit(6,1)", "posit(6,1)/channel/log2-hist", "e2m1/block:16/absmax", "dt8/block:64/absmax",
           "nf4/block:64/absmax", "int8/channel:1/pow2", "uint8/tensor/pow2", "e3m2/block:32/mx",
           "lp(6,1,2,0)/tensor/sqnr", "int4/sorted:8/absmax", "e4m3/block:7/mse", "nvfp4", "mxint8"]


@pytest.mark.parametrize("spec", SCHEMES)
def test_dequantize_equals_fake_quantize(spec):
    torch.manual_seed(0)
    x = torch.randn(6, 40) * 3
    qt = dl.quantize(x, spec)
    assert qt.dequantize().dtype == x.dtype and qt.dequantize().shape == x.shape
    assert torch.equal(qt.dequantize(), dl.fake_quantize(x, spec))


@pytest.mark.parametrize("spec, expected", [
    ("posit(6,1)", 6 * 240),
    ("int8/tensor/absmax", 8 * 240 + 32),
    ("int8/channel/absmax", 8 * 240 + 6 * 32),
    ("int8/channel:1/pow2", 8 * 240 + 40 * 8),
    ("dt8/block:8/absmax", 8 * 240 + 30 * 32),
    ("dt8/block:64/absmax", 8 * 240 + 4 * 32),  # 240 elements, last dim 40: flattened blocks, 4 of them
    ("int4/sorted:8/absmax", 4 * 240 + 30 * 32 + 240 * 8),  # permutation: ceil(log2 240) = 8 bits each
    ("nvfp4", 4 * 240 + 15 * 8 + 32),
])
def test_storage_bits_exact(spec, expected):
    assert dl.quantize(torch.randn(6, 40), spec).storage_bits == expected


def test_dt8_blocks_of_64_cost_8_5_bits():
    assert dl.quantize(torch.randn(16, 256), "dt8/block:64/absmax").bits_per_element == 8.5


def test_blockwise_dt8_is_exact_nearest_code():
    torch.manual_seed(4)
    x = torch.randn(40, 64, dtype=torch.float64) * torch.rand(40, 1, dtype=torch.float64) * 10
    table = dl.fmt("dt8").values().numpy()
    got = dl.fake_quantize(x, "dt8/block:64/absmax").numpy()
    for block, out in zip(x.numpy(), got, strict=True):
        s = np.float64(np.float32(np.abs(block).max()))  # fp32 absmax scale
        dist = np.abs(block[:, None] / s - table[None, :])
        best = dist.argmin(axis=1)  # lowest index on ties; exact ties have probability ~0 here
        np.testing.assert_array_equal(out, table[best] * s)


def test_save_load_round_trip(tmp_path):
    x = torch.randn(5, 33)
    for spec in ("e2m3/block:32/mx", "int4/sorted:16/absmax", "posit(8,1)/channel/log2-energy"):
        qt = dl.quantize(x, spec)
        qt.save(tmp_path / "q.safetensors")
        back = dl.QTensor.load(tmp_path / "q.safetensors")
        assert back.scheme == qt.scheme and back.storage_bits == qt.storage_bits
        assert torch.equal(back.dequantize(), qt.dequantize())
    assert [p.name for p in tmp_path.iterdir()] == ["q.safetensors"]  # no temp files left behind
