"""The simulated accumulators against exact arithmetic (fractions), sequential float32 and torch.matmul."""

import functools
from fractions import Fraction

import numpy as np
import pytest
import torch

import dtypelab as dl
from dtypelab.arith import Compute, accumulator, rounder, sum_to_odd
from dtypelab.formats.posit import pattern_values


def _exact(a: torch.Tensor, b: torch.Tensor) -> list[list[Fraction]]:
    fa = [[Fraction(v) for v in row] for row in a.tolist()]
    fb = [[Fraction(v) for v in row] for row in b.T.tolist()]
    return [[sum((x * y for x, y in zip(r, c, strict=True)), Fraction(0)) for c in fb] for r in fa]


@functools.lru_cache
def _posit_values(n: int, es: int) -> list[Fraction]:
    v = pattern_values(np.arange(1 << n, dtype=np.int64), n, es)
    return sorted(Fraction(x) for x in set(v[np.isfinite(v)].tolist()))


def _round_once(ex: Fraction, n: int, es: int) -> float:
    """``ex`` rounded to posit(n, es) as the posit standard defines it: the boundary between two neighbours is
    the posit(n+1, es) value between them (a tie goes to the even pattern); nonzero values never round to zero,
    large ones saturate at maxpos."""
    import bisect

    if ex == 0:
        return 0.0
    vals, finer = _posit_values(n, es), _posit_values(n + 1, es)
    if abs(ex) >= vals[-1]:
        return float(vals[-1] if ex > 0 else vals[0])
    i = bisect.bisect_left(vals, ex)
    lo, hi = vals[i - 1], vals[i]
    if ex == hi:
        return float(hi)
    if lo == 0 or hi == 0:
        return float(hi if lo == 0 else lo)
    mid = finer[bisect.bisect_left(finer, lo) + 1]
    assert lo < mid < hi
    if ex == mid:  # the even pattern: the one at an odd index of the signed value list (0 at the middle)
        return float(lo if (i - 1 - vals.index(Fraction(0))) % 2 == 0 else hi)
    return float(lo if ex < mid else hi)


@pytest.mark.parametrize("n,k", [(8, 96), (16, 48)])
def test_quire_is_the_exact_dot_product_rounded_once(n, k):
    spec = f"posit({n},1)"
    torch.manual_seed(1)
    v = dl.fmt(spec).values()
    a = v[torch.randint(len(v), (6, k))]
    b = v[torch.randint(len(v), (k, 5))]
    a[0, : k // 2] = 0  # a row with fewer terms, and a cancelling pair
    a[1, 0], b[0, :], a[1, 1], b[1, :] = v[-1], 1.0, -v[-1], 1.0
    got = Compute.parse({"accumulator": "quire", "output": spec}).matmul(a, b)
    exact = _exact(a, b)
    want = [[_round_once(x, n, 1) for x in row] for row in exact]
    assert got.tolist() == want
    assert got[1].tolist() != (a[1:2] @ b).tolist()  # float64 loses the small terms next to the cancelling pair


def test_sum_to_odd_rounds_correctly_to_fp32():
    """Terms whose exact sum needs > 53 bits: one float32 rounding of the round-to-odd sum is the exact one."""
    g = torch.Generator().manual_seed(3)
    terms = torch.randn(9, 400, generator=g, dtype=torch.float64) * torch.exp2(
        torch.randint(-60, 60, (9, 400), generator=g).double())
    got = sum_to_odd(terms).to(torch.float32)
    for j in range(400):
        ex = sum((Fraction(x) for x in terms[:, j].tolist()), Fraction(0))
        lo = np.float32(float(ex))
        cands = [lo, np.nextafter(lo, np.float32(np.inf)), np.nextafter(lo, np.float32(-np.inf))]
        best = min(cands, key=lambda y: (abs(Fraction(float(y)) - ex), int(np.float32(y).view(np.int32)) & 1))
        assert float(got[j]) == float(best), j


def test_fp32_sequential_equals_a_float32_loop():
    """chunk 1: the running sum is rounded to fp32 after every product, in order: numpy's sequential float32
    accumulate of the float32 products, bit for bit."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 300, generator=g)
    b = torch.randn(300, 5, generator=g)
    c = Compute.parse({"accumulator": "fp32", "product": "fp32", "chunk": 1})
    got = c.matmul(a, b).to(torch.float32).numpy()
    prods = (a.numpy()[:, :, None] * b.numpy()[None, :, :]).astype(np.float32)
    want = np.add.accumulate(prods, axis=1, dtype=np.float32)[:, -1, :]
    assert np.array_equal(got, want)


@pytest.mark.parametrize("chunk", [1, 16, 300])
def test_fp32_accumulator_versus_torch_matmul(chunk):
    """Orders differ from BLAS: within the standard bound |err| <= gamma_K * sum|a b| (gamma_K = K u / (1 - K u),
    u = 2^-24) of the exact value, and so is torch.matmul; both equal it exactly on integer data."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 300, generator=g)
    b = torch.randn(300, 9, generator=g)
    c = Compute.parse({"accumulator": "fp32", "chunk": chunk})
    got = c.matmul(a, b)
    exact = a.double() @ b.double()
    u = 2.0**-24
    gamma = 300 * u / (1 - 300 * u)
    bound = gamma * (a.double().abs() @ b.double().abs())
    assert bool(((got - exact).abs() <= bound).all())
    assert bool(((torch.matmul(a, b).double() - got).abs() <= 2 * bound).all())
    ai = torch.randint(-8, 8, (16, 300), generator=g).float()
    bi = torch.randint(-8, 8, (300, 9), generator=g).float()
    assert torch.equal(c.matmul(ai, bi).float(), torch.matmul(ai, bi))


def test_fp32_one_chunk_is_the_correctly_rounded_sum():
    """chunk = K with exactly summable products (e4m3 operands): one rounding of the exact sum."""
    g = torch.Generator().manual_seed(2)
    v = dl.fmt("e4m3").values()
    a = v[torch.randint(len(v), (8, 64), generator=g)]
    b = v[torch.randint(len(v), (64, 4), generator=g)]
    got = Compute.parse({"accumulator": "fp32", "chunk": 64}).matmul(a, b)
    want = [[float(np.float32(float(x))) for x in row] for row in _exact(a, b)]
    assert got.tolist() == want


def test_bf16_and_fp16_accumulators_lose_what_fp32_keeps():
    a = torch.ones(1, 512)
    b = torch.ones(512, 1)
    assert Compute.parse("bf16").matmul(a, b).item() == 256.0  # adding 1 at a time, bf16 stops at 2^8
    assert Compute.parse({"accumulator": "bf16", "order": "pairwise"}).matmul(a, b).item() == 512.0
    assert Compute.parse({"accumulator": "bf16", "chunk": 128}).matmul(a, b).item() == 512.0
    assert Compute.parse("fp32").matmul(a, b).item() == 512.0
    a[0, 0] = 2040.0
    assert Compute.parse("fp16").matmul(a[:, :64], b[:64]).item() == 2048.0  # fp16 stops at 2^11
    rz = Compute.parse({"accumulator": "bf16/rz", "chunk": 1}).matmul(torch.full((1, 3), 1.0),
                                                                      torch.tensor([[1.0], [2**-8], [2**-8]]))
    assert rz.item() == 1.0


def _fp8_dot(k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A long dot product of e4m3 values with a positive mean (as in a GEMM's output channel)."""
    g = torch.Generator().manual_seed(seed)
    f = dl.fmt("e4m3")
    a = f.quantize(torch.rand(32, k, generator=g, dtype=torch.float64) * 2)
    b = f.quantize(torch.rand(k, 1, generator=g, dtype=torch.float64) * 2)
    return a, b


def test_align_24_is_fp32_where_no_bits_are_lost():
    """Products of one binade, |product| in [1, 2) on a 2^-6 grid: k = 24 keeps every bit, so align:24 with
    promotion every chunk is exactly the fp32 accumulator with that chunk, and torch.matmul (exact sums)."""
    g = torch.Generator().manual_seed(5)
    a = 1 + torch.randint(0, 8, (16, 512), generator=g).double() / 8
    b = torch.ones(512, 6, dtype=torch.float64)
    b[:, 1::2] = -1
    for chunk in (32, 128, 512):
        al = Compute.parse({"accumulator": "align:24", "chunk": chunk}).matmul(a, b)
        fp = Compute.parse({"accumulator": "fp32", "chunk": chunk}).matmul(a, b)
        assert torch.equal(al, fp)
    assert torch.equal(al.float(), torch.matmul(a.float(), b.float()))


def _rel_err(spec: dict, k: int) -> float:
    errs = []
    for seed in range(3):
        a, b = _fp8_dot(k, seed)
        exact = a @ b  # float64: exact for e4m3 products and these sums
        got = Compute.parse(spec).matmul(a, b)
        errs.append(float(((got - exact).abs() / exact.abs()).mean()))
    return sum(errs) / len(errs)


def test_align_13_error_grows_with_k_and_promotion_bounds_it():
    """The DeepSeek-V3 / DeepGEMM observation on synthetic FP8 data: with ~13 kept bits and no promotion the
    relative error of a long dot product grows with K; promoting into fp32 every 128 products keeps it flat."""
    ks = (256, 1024, 4096)
    never = [_rel_err({"accumulator": "align:13", "group": 32}, k) for k in ks]
    every = [_rel_err({"accumulator": "align:13", "group": 32, "chunk": 128}, k) for k in ks]
    assert never[0] < never[1] < never[2]
    assert never[2] > 4 * never[0]
    assert max(every) < 2 * min(every)
    assert every[2] < never[2] / 4
    assert _rel_err({"accumulator": "align:24", "group": 32}, 4096) < never[2] / 100


def test_fixed_point_overflow_policies():
    a = torch.full((1, 4), 2.0**30)
    b = torch.ones(4, 1)
    with pytest.raises(OverflowError, match="int32"):
        Compute.parse("int32").matmul(a, b)
    assert Compute.parse({"accumulator": "int32", "overflow": "saturate"}).matmul(a, b).item() == 2**31 - 1
    assert Compute.parse({"accumulator": "int32", "overflow": "wrap"}).matmul(a, b).item() == 0.0
    # fixed(16,4): products rounded onto 2^-4, truncated with rz
    x = torch.tensor([[0.1, 0.2]])
    y = torch.ones(2, 1)
    assert Compute.parse("fixed(16,4)/rz").matmul(x, y).item() == (1 + 3) / 16  # 1.6 -> 1, 3.2 -> 3
    assert Compute.parse("fixed(16,4)").matmul(x, y).item() == (2 + 3) / 16


@pytest.mark.parametrize("bad,match", [
    ({"accumulator": "fp99"}, "accumulator 'fp99'"),
    ({"accumulator": "align:0"}, "1 <= k"),
    ({"accumulator": "quire", "product": "bf16"}, "exact products"),
    ({"accumulator": "fp32", "group": 4}, "group"),
    ({"chunk": 0}, "positive integer"),
    ({"order": "tree"}, "valid: sequential, pairwise"),
    ({"accumulate": "fp32"}, "unknown key"),
    ({"accumulator": "fp32/rz"}, "nearest even only"),
])
def test_bad_compute_specs(bad, match):
    with pytest.raises(ValueError, match=match):
        Compute.parse(bad)


def test_round_trip_and_parse():
    c = Compute.parse({"accumulator": "align:13", "chunk": 128, "group": 32, "output": "bf16"})
    assert Compute.parse(c.to_dict()) == c
    assert str(accumulator("fixed(32,16)/rz")) == "fixed(32,16)/rz"
    assert rounder("e4m3/rz").spec == "e4m3/rz"
