"""The fast numba path and the torch device path equal RoundingTable.reference_index; specs and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dtypelab as dl
from dtypelab.formats.registry import valid_forms
from dtypelab.kernels import lut
from dtypelab.kernels.backend import REFERENCE
from dtypelab.kernels.cpu import BACKEND

SPECS = ["posit(8,1)", "posit(16,1)", "e4m3", "fp16", "bf16", "lp(8,2,2,0)", "lp(10,1,9,0.3)", "dt8", "nf4",
         "uint8", "int16", "codebook(0,1e-38,1)"]


def _bucket_ends(dtype: type, key_bits: int, sample: int = 1 << 16) -> np.ndarray:
    """Each bucket's lowest, second-lowest, middle and highest member, for ``sample`` buckets (all, if fewer)."""
    width = np.uint32 if dtype == np.float32 else np.uint64
    low_bits = (32 if dtype == np.float32 else 64) - key_bits
    keys = np.arange(1 << key_bits, dtype=width)
    if keys.size > sample:
        keys = np.random.default_rng(0).choice(keys, sample, replace=False)
    keys = keys << width(low_bits)
    low = width((1 << low_bits) - 1)
    return np.concatenate([keys, keys | low, keys + width(1), keys | width(1 << (low_bits - 1))]).view(dtype)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_equals_reference_on_bucket_ends_and_random_inputs(spec: str, dtype: type) -> None:
    f = dl.fmt(spec)
    table = f.engine.table
    rng = np.random.default_rng(1)
    width = np.uint32 if dtype == np.float32 else np.uint64
    rand = rng.integers(0, np.iinfo(width).max, 200_000, dtype=width, endpoint=True).view(dtype)
    key_bits = (32 if dtype == np.float32 else 64) - f.engine.lut(dtype).low_bits
    t = table.thresholds.astype(dtype)
    with np.errstate(invalid="ignore"):
        x = np.concatenate([_bucket_ends(dtype, 16), _bucket_ends(dtype, key_bits), rand, t,
                            np.nextafter(t, dtype(np.inf)), np.nextafter(t, dtype(-np.inf))])
    ref = table.reference_index(x)
    xt = torch.from_numpy(x)
    with np.errstate(invalid="ignore"):
        want_codes = table.codes[ref]
        want_values = table.values[ref].astype(dtype) if dtype == np.float64 else table.float32_values[ref]
    if f.nan_code is not None:
        np.testing.assert_array_equal(f.encode(xt).numpy().astype(np.int64), want_codes)
    else:
        keep = ~np.isnan(x)
        np.testing.assert_array_equal(f.encode(xt[torch.from_numpy(keep)]).numpy().astype(np.int64),
                                      want_codes[keep])
    got = f.quantize(xt).numpy()
    np.testing.assert_array_equal(got, want_values)
    # the torch reference backend (every non-CPU device's path), forced on CPU tensors
    dev_values = torch.empty(xt.shape, dtype=torch.float64)
    REFERENCE.table(f.engine, xt, dev_values, "value")
    np.testing.assert_array_equal(dev_values.numpy(), table.values[ref])
    dev_codes = torch.empty(xt.shape, dtype=f.engine.code_dtype)
    nans = REFERENCE.table(f.engine, xt, dev_codes, "code")
    np.testing.assert_array_equal(dev_codes.numpy().astype(np.int64), want_codes)
    assert isinstance(nans, torch.Tensor) and int(nans) == int(np.isnan(x).sum())  # a tensor: no host sync


@pytest.mark.parametrize("bad", ["posit(1,0)", "posit(8,-1)", "lp(8,2,0,0)", "e9m9x", "dt(1)", "posit(33,0)",
                                 "lp(8,2,2)x", "fp(9,3)", "int(1)", "nf4(3)", "wat"])
def test_bad_specs_raise_value_error_naming_valid_forms(bad: str) -> None:
    with pytest.raises(ValueError) as info:
        dl.fmt(bad)
    msg = str(info.value)
    assert any(word in msg for word in ("valid", "must be", "takes", "need")), msg
    assert any(ch.isdigit() for ch in msg) or valid_forms() in msg


def test_unknown_spec_lists_every_valid_form() -> None:
    with pytest.raises(ValueError, match="valid forms"):
        dl.fmt("e9m9x")


@pytest.mark.parametrize("spec", ["posit(8,1)", "e4m3", "lp(8,2,2,0)", "posit(32,2)"])
def test_non_float_tensor_is_a_type_error(spec: str) -> None:
    f = dl.fmt(spec)
    for bad in (torch.tensor([1, 2]), torch.tensor([True]), [1.0, 2.0]):
        with pytest.raises(TypeError):
            f.quantize(bad)
        with pytest.raises(TypeError):
            f.encode(bad)


def test_out_must_match() -> None:
    f = dl.fmt("posit(8,1)")
    x = torch.randn(10)
    with pytest.raises(ValueError, match="out must be"):
        f.quantize(x, out=torch.empty(10, dtype=torch.float64))
    with pytest.raises(ValueError, match="out must be"):
        f.encode(x, out=torch.empty(10, dtype=torch.int32))


@pytest.mark.parametrize("spec", ["posit8", "posit16", "posit32", "e4m3fn", "bfloat16", "FP(5, 2)", "int8", "uint4",
                                  "dt8", "nf4", "lp(8,2,2,0.5)", "lp(6,1,2)", "codebook(-1,0.5)"])
def test_str_round_trips(spec: str) -> None:
    f = dl.fmt(spec)
    assert dl.fmt(str(f)) == f and str(dl.fmt(str(f))) == str(f)


def test_posit32_in_a_new_shape_and_dtype() -> None:
    f = dl.fmt("posit32")
    x = torch.randn(3, 4, dtype=torch.float64)
    q = f.quantize(x)
    assert q.shape == (3, 4) and torch.equal(f.decode(f.encode(x), torch.float64), q)
    assert torch.equal(f.quantize(q), q)


def test_every_lookup_form_is_exercised_by_the_oracle_test() -> None:
    """The comparison above runs each form of the lookup: direct, one cut per bucket, two-level."""
    def form(spec: str, dtype: type) -> str:
        m = dl.fmt(spec).engine.lut(dtype)
        return "direct" if m.direct else "cut" if m.cut is not None else "two-level"

    forms = {form(spec, dtype) for spec in SPECS for dtype in (np.float32, np.float64)}
    assert forms == {"direct", "cut", "two-level"}
    assert form("dt8", np.float32) == "cut" and form("fp16", np.float32) == "direct"



@pytest.mark.parametrize("spec, dtype, form", [
    ("e4m3", np.float32, lut.DIRECT), ("nf4", np.float32, lut.CUT), ("dt8", np.float64, lut.TWO_LEVEL),
    ("bf16", np.float32, lut.DIRECT), ("lp(10,2,2,0)", np.float32, lut.CUT), ("fp16", np.float64, lut.TWO_LEVEL)])
def test_encode_kernels_store_every_length_and_count_nans(spec: str, dtype: type, form: int) -> None:
    """The CPU encode kernels (8-bit codes four to a 32-bit store, the rest one at a time) write the reference's
    codes for every length and output offset, count exactly the NaN inputs, and write nothing past the output."""
    f = dl.fmt(spec)
    assert f.engine.lut(dtype).form == form
    rng = np.random.default_rng(3)
    for n in [*range(10), 1001]:
        x = (rng.standard_normal(n) * 4).astype(dtype)
        x[rng.random(n) < 0.2] = np.nan
        for offset in (0, 1, 3):  # the output starts off a 4-byte boundary too
            buf = torch.full((n + offset + 4,), 0x5A, dtype=f.engine.code_dtype)
            out = buf[offset:offset + n]
            nans = BACKEND.table(f.engine, torch.from_numpy(x), out, "code")
            want = f.engine.table.codes[f.engine.table.reference_index(x)]
            np.testing.assert_array_equal(out.numpy().astype(np.int64), want)
            assert nans == int(np.isnan(x).sum())
            assert bool((buf[:offset] == 0x5A).all()) and bool((buf[offset + n:] == 0x5A).all())


def test_kernel_caches_older_than_any_kernel_source_are_dropped(tmp_path) -> None:
    import os

    from dtypelab.kernels import _drop_stale_kernel_caches

    (tmp_path / "__pycache__").mkdir()
    lut, blockwise = tmp_path / "lut.py", tmp_path / "blockwise.py"
    stale, fresh = tmp_path / "__pycache__" / "blockwise.k-1.py311.nbi", tmp_path / "__pycache__" / "lut.k-2.py311.nbi"
    for path, mtime in ((blockwise, 100), (stale, 200), (lut, 300), (fresh, 400)):
        path.write_text("")
        os.utime(path, (mtime, mtime))
    _drop_stale_kernel_caches(tmp_path)
    assert not stale.exists() and fresh.exists()  # compiled before lut.py changed: dropped


@pytest.mark.parametrize("spec, form", [("e4m3", lut.DIRECT), ("nf4", lut.CUT), ("int16", lut.TWO_LEVEL),
                                        ("lp(12,2,3,0)", lut.TWO_LEVEL)])
def test_torch_backend_equals_the_numba_kernels_on_ten_million_patterns(spec: str, form: int) -> None:
    """The torch path every non-CPU device takes, forced on CPU tensors: the same bits as numba on 10^7 random
    float32 bit patterns (NaN, inf and subnormal patterns included) and on every 16-bit bucket's ends."""
    f = dl.fmt(spec)
    assert f.engine.lut(np.float32).form == form
    patterns = np.random.default_rng(7).integers(0, 2**32, 10_000_000, dtype=np.uint64).astype(np.uint32)
    x = torch.from_numpy(np.concatenate([patterns.view(np.float32), _bucket_ends(np.float32, 16)]))
    for what, dtype in (("value", torch.float32), ("code", f.engine.code_dtype)):
        fast, ref = torch.empty(x.shape, dtype=dtype), torch.empty(x.shape, dtype=dtype)
        BACKEND.table(f.engine, x, fast, what)
        REFERENCE.table(f.engine, x, ref, what)
        assert torch.equal(fast.view(torch.int32) if dtype == torch.float32 else fast,
                           ref.view(torch.int32) if dtype == torch.float32 else ref), what
