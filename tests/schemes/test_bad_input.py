"""Inputs that used to give silently wrong answers or deep tracebacks: non-float tensors, scales beyond the
scale format's range, NaN and inf in every kind of scheme (one rule, the same in the fused and generic paths),
empty tensors, absurd block sizes, and QTensor files that are not what they claim."""

import json
import re

import pytest
import torch

import dtypelab as dl
from dtypelab.kernels import cpu

BLOCK_SCHEMES = ["nf4/block:4/absmax", "dt8/block:64/absmax", "int4/block:4/absmax", "int4/tensor/absmax",
                 "int8/channel/absmax", "posit(8,1)/block:8/log2-hist", "e4m3/tensor/pow2", "int8/block:16/mse"]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.complex64])
def test_non_float_tensors_are_refused(dtype):
    x = torch.tensor([3, -7, 100, 50]).to(dtype)
    for call in (dl.quantize, dl.fake_quantize):
        with pytest.raises(TypeError, match="floating tensor"):
            call(x, "int8/tensor/absmax")


def test_scales_stay_finite_and_nonzero():
    big = dl.fake_quantize(torch.tensor([1e300, 1.0], dtype=torch.float64), "int8/tensor/absmax")
    assert torch.isfinite(big).all() and big[0] > 1e38  # the scale clamps to float32's max: it saturates
    tiny = dl.fake_quantize(torch.tensor([1e-42, -3e-43]), "posit(8,1)/tensor/absmax")
    assert torch.isfinite(tiny).all() and tiny[0] > 0 and tiny[1] < 0
    st = dl.Scheme.parse("posit(8,1)/tensor/absmax").scale(torch.tensor([1e-42])).scales
    assert st.item() == 2.0**-149


@pytest.mark.parametrize("spec", BLOCK_SCHEMES)
@pytest.mark.parametrize("fast", [True, False])
def test_infinity_sets_no_scale_and_saturates(spec, fast, monkeypatch):
    if not fast:
        monkeypatch.setattr(cpu, "MAX_BLOCK", 0)
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    scheme = dl.Scheme.parse(spec)
    clean = x.clone()
    x[2, 5], clean[2, 5] = float("inf"), 0.0
    x[3, 1], clean[3, 1] = float("-inf"), 0.0
    q, ref = dl.fake_quantize(x, scheme), dl.fake_quantize(clean, scheme)
    finite = torch.isfinite(x)
    assert torch.equal(q[finite], ref[finite])  # the other elements are as if the infinities were zeros
    # the infinities themselves round as the format rounds ±inf (saturated, inf, or NaR for posits), then scale
    units = scheme.scale(x).values()
    own = scheme.format.quantize(torch.tensor([float("inf"), float("-inf")]) + scheme.element_range.zero_point)
    own = own - scheme.element_range.zero_point
    assert torch.equal(units[[2, 3], [5, 1]].nan_to_num(7.0), own.nan_to_num(7.0))
    assert torch.equal(q[[2, 3], [5, 1]].isnan(), own.isnan())
    if own.isnan().any():
        return
    codes = dl.quantize(x, scheme)  # no "NaN" complaint for an infinity
    assert torch.equal(codes.dequantize()[finite], dl.quantize(clean, scheme).dequantize()[finite])


@pytest.mark.parametrize("spec", ["int4/block:4/absmax", "nf4/block:4/absmax", "int8/tensor/absmax"])
def test_nan_in_a_format_without_nan_says_nan(spec):
    x = torch.tensor([1.0, float("nan"), 2.0, 3.0])
    assert dl.fake_quantize(x, spec).isnan().tolist() == [False, True, False, False]
    with pytest.raises(ValueError, match="NaN value"):
        dl.quantize(x, spec)


@pytest.mark.parametrize("spec", ["mxfp4", "mxfp6", "mxint8", "mxfp8", "e2m1/block:32/mx-ceil", "e3m2/block:32/mx-even",
                                  "int8/block:32/mx-rceil", "fp(3,2)/block:32/mx-even"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("fast", [True, False])
def test_mx_block_with_nan_or_inf_decodes_to_nan(spec, bad, fast, monkeypatch):
    if not fast:
        monkeypatch.setattr(cpu, "MAX_BLOCK", 0)
    x = torch.randn(2, 32)
    x[1, 7] = bad
    qt = dl.quantize(x, spec)  # OCP: the block's shared scale is NaN; its elements carry nothing
    assert qt.scales.isnan().tolist() == [False, True]
    back = qt.dequantize()
    assert back[1].isnan().all() and torch.equal(back[0], dl.fake_quantize(x, spec)[0])
    assert dl.fake_quantize(x, spec)[1].isnan().all()


@pytest.mark.parametrize("spec", ["int8/tensor/absmax", "int8/channel/absmax", "nf4/block:64/absmax", "mxfp8",
                                  "posit(6,1)/channel:1/log2-hist", "dt8/sorted:16/absmax", "e4m3"])
@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0)])
def test_empty_tensors(spec, shape):
    x = torch.empty(shape)
    if "channel:1" in spec and len(shape) == 1:
        with pytest.raises(ValueError, match="out of range"):  # the axis itself is missing, empty or not
            dl.fake_quantize(x, spec)
        return
    assert dl.fake_quantize(x, spec).shape == x.shape
    if spec.startswith("int8/channel") and shape == (0,):
        return  # a 1-D empty tensor has one axis of size 0: zero channels, zero scales
    qt = dl.quantize(x, spec)
    assert qt.dequantize().shape == x.shape and qt.numel == 0
    assert qt.storage_bits == qt.scales.numel() * qt.scheme.scale_bits + 0


@pytest.mark.parametrize("spec", ["int8/block:99999999999999999999", "int8/sorted:0", "int8/block:-4",
                                  "int8/tensor:3", "int8/channel:x"])
def test_absurd_granularities_fail_at_parse(spec):
    with pytest.raises(ValueError, match="granularity|block size"):
        dl.Scheme.parse(spec)


def _saved(tmp_path, spec="nf4/block:4/absmax"):
    path = tmp_path / "q.safetensors"
    dl.quantize(torch.randn(4, 8), spec).save(path)
    return path


def _rewrite(path, tensors=None, meta=None):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        old_meta, old = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    old.update(tensors or {})
    old_meta.update(meta or {})
    save_file({k: v for k, v in old.items() if v is not None}, str(path),
              metadata={k: v for k, v in old_meta.items() if v is not None})


@pytest.mark.parametrize("change, field", [
    (dict(meta={"shape": json.dumps([4, 9])}), "codes"),
    (dict(meta={"shape": "[4"}), "shape"),
    (dict(meta={"scheme": "nf4/block:7/absmax"}), "scales"),
    (dict(meta={"scheme": "nonsense"}), "scheme"),
    (dict(meta={"dtype": "torch.int64"}), "dtype"),
    (dict(meta={"dtype": None}), "dtype"),
    (dict(tensors={"scales": None}), "scales"),
    (dict(tensors={"codes": torch.zeros(3, dtype=torch.int32)}), "codes"),
])
def test_load_validates_every_field(tmp_path, change, field):
    path = _saved(tmp_path)
    _rewrite(path, **change)
    with pytest.raises(ValueError, match=f"q.safetensors: field '{field}'"):
        dl.QTensor.load(path)


def test_load_refuses_foreign_and_broken_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a tensor file\n")
    with pytest.raises(ValueError, match="notes.txt: not a QTensor"):
        dl.QTensor.load(text)
    path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(ValueError, match="q.safetensors"):
        dl.QTensor.load(path)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        dl.QTensor.load(tmp_path / "missing.safetensors")
    path = _saved(tmp_path, "int8/sorted:4/absmax")
    _rewrite(path, tensors={"perm": torch.zeros(32, dtype=torch.int64)})
    with pytest.raises(ValueError, match="field 'perm'"):
        dl.QTensor.load(path)


def test_load_round_trips(tmp_path):
    x = torch.randn(4, 8)
    for spec in ("nf4/block:4/absmax", "int8/sorted:4/absmax", "mxfp4", "posit(6,1)/channel:1/log2-hist"):
        path = tmp_path / "r.safetensors"
        dl.quantize(x, spec).save(path)
        assert torch.equal(dl.QTensor.load(path).dequantize(), dl.quantize(x, spec).dequantize())


def test_nvfp4_keeps_small_tensors():
    """NVFP4's per-tensor float32 scale: a tensor 10^4 times smaller quantizes to the same relative error (with
    plain E4M3 block scales every block scale floors at 2^-9 and the tensor comes back all zeros)."""
    torch.manual_seed(0)
    x = torch.randn(64, 64)
    small = dl.fake_quantize(x * 1e-4, "nvfp4")
    assert (small != 0).float().mean() > 0.9
    rel = (small - x * 1e-4).norm() / (x * 1e-4).norm()
    assert rel == pytest.approx(float((dl.fake_quantize(x, "nvfp4") - x).norm() / x.norm()), rel=1e-3)
    assert (dl.fake_quantize(x * 1e-4, "e2m1/block:16/absmax/e4m3") == 0).all()
    assert dl.quantize(x, "nvfp4").storage_bits == 4096 * 4 + 256 * 8 + 32


@pytest.mark.parametrize("spec, says", [("int8/block:16/absmax/foo+fp32", "unknown format spec 'foo'"),
                                        ("int8/block:16/absmax/posit(32,2)", "at most 16 bits"),
                                        ("int8/block:16/absmax/uint4+fp32", None)])
def test_scale_storage_specs(spec, says):
    """Scale storage is ``none``, ``fp32`` or a format of at most 16 bits, optionally ``+fp32``."""
    if says is None:
        assert str(dl.Scheme.parse(spec)) == spec
        return
    with pytest.raises(ValueError, match=re.escape(says)):
        dl.Scheme.parse(spec)
