"""The fast paths of the simulated accumulators against straightforward references: the fused add-and-round
kernel against each format's ``quantize`` after every add, and a whole dot product against a per-chunk
(per-group) loop."""

import pytest
import torch

import dtypelab as dl
from dtypelab.arith import Compute, rounder
from dtypelab.kernels.accumulate import accumulate_


def _hard_values(spec: str, n: int = 20000) -> torch.Tensor:
    """Random magnitudes over the whole range of ``spec`` and beyond, the format's ties, subnormal ties,
    overflow, signed zeros, inf and NaN."""
    g = torch.Generator().manual_seed(0)
    r = rounder(spec)
    lo = r.grid.min_exp - 3
    hi = int(torch.tensor(r.grid.max).log2().ceil()) + 3
    x = torch.randn(n, generator=g, dtype=torch.float64) * torch.exp2(
        torch.randint(lo, hi, (n,), generator=g).double())
    if spec == "fp32":
        v = torch.randn(4000, generator=g).double()
        vals = torch.cat([v, v.float().nextafter(torch.tensor(float("inf"))).double()])
    else:
        vals = dl.fmt(spec).values()
    mids = (vals[1:] + vals[:-1]) / 2  # ties (exact in float64)
    step = 2.0**r.grid.min_exp
    special = torch.tensor([0.0, -0.0, step, step / 2, -step / 2, 1.5 * step, step / 4, float("inf"),
                            -float("inf"), float("nan"), r.grid.max, -r.grid.max, r.grid.max * 1.0001, 1e300],
                           dtype=torch.float64)
    return torch.cat([x, mids, mids.nextafter(torch.tensor(0.0, dtype=torch.float64)), special])


def _same(got: torch.Tensor, want: torch.Tensor) -> None:
    """Bit for bit, signed zeros included; any NaN for NaN."""
    assert torch.equal(got.isnan(), want.isnan())
    ok = ~want.isnan()
    assert torch.equal(got[ok], want[ok])
    assert torch.equal(torch.signbit(got[ok]), torch.signbit(want[ok]))


SPECS = ["bf16", "fp16", "fp(5,10)", "e5m2", "fp(4,3)", "fp(3,2)", "fp32"]


@pytest.mark.parametrize("spec", SPECS)
def test_one_add_equals_the_format(spec):
    """One chunk added to zero and rounded is bit for bit what the rounder does to it (quantize, or the float32
    cast): ties, subnormal ties, overflow, signed zeros, inf, NaN."""
    r = rounder(spec)
    assert r.grid is not None
    x = _hard_values(spec)
    _same(accumulate_(torch.zeros_like(x), x[None].clone(), r.grid), r(0.0 + x))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("fp32", [False, True])
def test_accumulate_equals_rounding_after_every_add(spec, fp32):
    """A running sum through 5 chunk sums, rounded after each add, against a loop of the rounder: the sums are
    the hard values shuffled (so running sums meet ties, subnormals, overflow, inf - inf); float32 chunk sums
    are added in float32."""
    r = rounder(spec)
    x = _hard_values(spec)
    g = torch.Generator().manual_seed(1)
    parts = torch.stack([x[torch.randperm(len(x), generator=g)] for _ in range(5)])
    s0 = r(x[torch.randperm(len(x), generator=g)])
    if fp32:
        parts = parts.float()
    want = s0.clone()
    for p in parts:
        if fp32:
            want = r((want.float() + p).double()).float().double()
        else:
            want = r(want + p)
    _same(accumulate_(s0.clone(), parts, r.grid), want)


def test_formats_without_a_grid_take_the_rounder():
    assert rounder("posit(16,1)").grid is None and rounder("bf16/rz").grid is None
    assert rounder("bf16/sr8").grid is None and rounder("exact").grid is None
    assert rounder("e4m3").grid is None  # no infinities: quantize saturates them


def _reference(c: Compute, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The running sum chunk after chunk: s = acc(s + a_chunk @ b_chunk) (align: per group, by its definition)."""
    k, chunk = a.shape[-1], c.chunk or a.shape[-1]
    acc = c.accumulator
    s = None
    for c0 in range(0, k, chunk):
        if hasattr(acc, "fmt"):
            p = a[:, c0:c0 + chunk] @ b[c0:c0 + chunk]
            s = acc.fmt(p if s is None else s + p)
            continue
        tc = None
        for g0 in range(c0, min(c0 + chunk, k), c.group or chunk):
            g1 = min(g0 + (c.group or chunk), c0 + chunk, k)
            prods = a[:, g0:g1, None] * b[None, g0:g1, :]  # [M, G, N]
            top = prods.abs().amax(1) if tc is None else torch.maximum(prods.abs().amax(1), tc.abs())
            grid = torch.exp2(torch.frexp(top)[1].double() - acc.k)
            cut = torch.trunc(prods / grid[:, None]).sum(1) * grid
            tc = cut if tc is None else cut + torch.trunc(tc / grid) * grid
        s = c.promote(tc if s is None else s + tc)
    return s


@pytest.mark.parametrize("compute", [
    {"accumulator": "fp32", "chunk": 32}, {"accumulator": "bf16", "chunk": 32}, {"accumulator": "fp16", "chunk": 32},
    {"accumulator": "bf16", "chunk": 1}, {"accumulator": "fp16", "chunk": 7},
    {"accumulator": "align:13", "group": 32, "chunk": 128}])
def test_fast_path_equals_the_per_chunk_reference(compute):
    """Random bf16-valued operands of mixed magnitudes (chunk sums exact in float64), K not a multiple of the
    chunk: the fast path is the per-chunk reference bit for bit."""
    g = torch.Generator().manual_seed(5)
    bf16 = dl.fmt("bf16")
    k = 300
    a = bf16.quantize(torch.randn(9, k, generator=g, dtype=torch.float64)
                      * torch.exp2(torch.randint(-6, 6, (9, k), generator=g).double()))
    b = bf16.quantize(torch.randn(k, 11, generator=g, dtype=torch.float64))
    c = Compute.parse(compute)
    got = c.matmul(a, b)
    assert torch.equal(got, _reference(c, a, b))
    assert not torch.equal(got, a @ b)  # the accumulator rounds something


@pytest.mark.parametrize("spec,scale", [("fp32", 2.0**-140), ("fp32", 2.0**115), ("bf16", 2.0**-128),
                                        ("bf16", 2.0**118), ("fp16", 2.0**-20), ("fp16", 2.0**6), ("fp(4,3)", 1.0)])
@pytest.mark.parametrize("chunk,precision", [(32, "fp64"), (7, "fp64"), (1, "fp64"), (32, "fp32")])
def test_fast_path_on_hard_operands(spec, scale, chunk, precision):
    """Small integers times powers of two (every chunk sum exact, in float32 too) scaled into the format's
    subnormals or up to its overflow, with ties, inf and NaN operands, K = 75 (not a multiple of the chunk) and
    broadcast batch dims: the fast path is the per-chunk loop s = acc(s + a_chunk @ b_chunk) bit for bit."""
    g = torch.Generator().manual_seed(2)
    k = 75
    a = torch.randint(-8, 9, (2, 3, 10, k), generator=g).double() * torch.exp2(
        torch.randint(0, 7, (k,), generator=g).double()) * scale
    b = torch.randint(-8, 9, (3, k, 12), generator=g).double()
    a[0, 0, 0, 5], a[0, 1, 1, 40], a[1, 2, 2, 70] = float("inf"), float("-inf"), float("nan")
    b[2, 3, 4] = float("inf")
    c = Compute.parse({"accumulator": spec, "chunk": chunk, "precision": precision})
    r = c.accumulator.fmt
    dt = torch.float32 if precision == "fp32" else torch.float64
    want = torch.zeros(2, 3, 10, 12, dtype=dt)
    for c0 in range(0, k, chunk):
        want = r((want + a[..., c0:c0 + chunk].to(dt) @ b[..., c0:c0 + chunk, :].to(dt)).double()).to(dt)
    got = c.matmul(a, b)
    _same(got, want.double())
    assert got.isnan().any() and got.isinf().any() and not torch.equal(got, (a @ b).nan_to_num())


@pytest.mark.parametrize("budget", [1, 240, 700, 5000])
def test_blocks_do_not_change_the_result(monkeypatch, budget):
    """Chunk by chunk (a budget too small for ``MIN_ROWS`` rows), blocks of rows of one batch (8 of 9 rows, then
    1) or of whole batches give the same bits as one block."""
    from dtypelab.arith import compute

    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 9, 70, generator=g, dtype=torch.float64)
    b = torch.randn(4, 70, 6, generator=g, dtype=torch.float64)
    c = Compute.parse({"accumulator": "bf16", "chunk": 16})
    whole = c.matmul(a, b)
    monkeypatch.setattr(compute, "CHUNK_BUDGET", budget)
    assert torch.equal(c.matmul(a, b), whole)
