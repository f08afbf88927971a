"""The fast paths of the simulated accumulators against straightforward references: the tiled chunk-sum-and-round
kernel against each format's ``quantize`` after every add, and a whole dot product against a per-chunk
(per-group) loop."""

import math
import re

import numpy as np
import pytest
import torch

import dtypelab as dl
from dtypelab.arith import Compute, rounder
from dtypelab.kernels import accumulate
from dtypelab.kernels.accumulate import accumulate_matmul
from dtypelab.kernels.gridsum import _inverse_step


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
    got = accumulate_matmul(x.reshape(1, -1, 1), torch.ones(1, 1, 1, dtype=torch.float64), 1, r.grid)
    _same(got.reshape(-1), r(0.0 + x))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("fp32", [False, True])
def test_accumulate_equals_rounding_after_every_add(spec, fp32):
    """A running sum through 5 chunk sums, rounded after each add, against a loop of the rounder: the sums are
    the hard values shuffled (so running sums meet ties, subnormals, overflow, inf - inf); float32 chunk sums
    are added in float32. The kernel sees one row per sum, ``[s0, p0, ..., p4]`` times ones, in chunks of one."""
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
    rows = torch.cat([s0[None].to(parts.dtype), parts]).T.contiguous()
    got = accumulate_matmul(rows[None], torch.ones(1, 6, 1), 1, r.grid, sums=parts.dtype)
    _same(got.reshape(-1), want)


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
            to_grid = torch.trunc if acc.mode == "rz" else torch.round  # round: half to even
            cut = to_grid(prods / grid[:, None]).sum(1) * grid
            tc = cut if tc is None else cut + to_grid(tc / grid) * grid
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


@pytest.mark.parametrize("work,min_tile,max_tile", [(1, 1, 2), (40, 2, 8), (300, 4, 30), (5000, 3, 1 << 14),
                                                    (1 << 18, 16, 1 << 14)])
def test_tiles_do_not_change_the_result(monkeypatch, work, min_tile, max_tile):
    """Tiles of one row and two columns with a BLAS call per product, tiles not dividing the output, chunks cut
    into pieces, one tile per batch: the same bits (bf16 operands of a narrow range: chunk sums exact in float64)."""
    g = torch.Generator().manual_seed(3)
    bf16 = dl.fmt("bf16")
    a = bf16.quantize(torch.randn(4, 9, 70, generator=g, dtype=torch.float64))
    b = bf16.quantize(torch.randn(4, 70, 6, generator=g, dtype=torch.float64))
    c = Compute.parse({"accumulator": "bf16", "chunk": 16})
    want = torch.stack([_reference(c, x, y) for x, y in zip(a, b, strict=True)])
    monkeypatch.setattr(accumulate, "GEMM_WORK", work)
    monkeypatch.setattr(accumulate, "MIN_TILE", min_tile)
    monkeypatch.setattr(accumulate, "MAX_TILE", max_tile)
    rows, cols, piece = accumulate.tiles(16, 9, 6)
    assert rows * cols * piece <= work or piece == 1
    assert torch.equal(c.matmul(a, b), want)


def _hard_operands(seed: int, m: int, k: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Operands over 40 binades with zeros, exact ties for a 13-bit cut (powers of two times 1 + 2^-14), an
    infinity and a NaN."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g, dtype=torch.float64) * torch.exp2(
        torch.randint(-20, 20, (m, k), generator=g).double())
    b = torch.randn(k, n, generator=g, dtype=torch.float64)
    a[a.abs() < 1e-5] = 0.0
    a[1, ::3] = torch.exp2(torch.randint(-3, 3, (len(range(0, k, 3)),), generator=g).double()) * (1 + 2.0**-14)
    b[::3, 2] = 1.0
    a[2, 7], a[3, 40] = float("inf"), float("nan")
    return a, b


@pytest.mark.parametrize("compute", [
    {"accumulator": "align:13", "group": 32, "chunk": 128}, {"accumulator": "align:13/rne", "group": 7, "chunk": 30},
    {"accumulator": "align:8", "group": 16}, {"accumulator": "align:24/rne", "chunk": 5, "promote": "bf16"},
    {"accumulator": "align:3", "group": 1, "chunk": 4, "promote": "fp16"}])
def test_align_kernel_on_hard_operands(compute):
    """The numba align kernel (groups not dividing the chunk, chunks not dividing K = 300, 260 columns: two
    column tiles) against the per-group reference: truncation and ties to even, fp32/bf16/fp16 promotion,
    inf and NaN rows."""
    a, b = _hard_operands(6, 9, 300, 260)
    c = Compute.parse(compute)
    got = c.matmul(a, b)
    want = _reference(c, a, b)
    _same(got, want)
    assert got[2].isinf().any() and got[3].isnan().all() and not torch.equal(got[:2], (a @ b)[:2])


def test_the_align_kernels_grid_step_is_frexp_and_ldexp():
    """The kernel's 1 / grid step from the bits (normal values) equals ldexp(1, k - frexp(top)) everywhere:
    zero, subnormals, the smallest and largest normals (where the result leaves float64's range), inf, NaN."""
    tops = [0.0, 5e-324, 2.0**-1022 * 0.75, 2.0**-1022, 2.0**-1000, 2.0**-1015, 1.0, 0.75, 3.0, 2.0**1000,
            1.7976931348623157e308, math.inf, math.nan] + [math.ldexp(1.3, e) for e in range(-1022, 1024, 37)]
    for k in (1, 3, 13, 24, 40):
        for top in tops:
            with np.errstate(over="ignore"):
                want = np.ldexp(1.0, k - np.frexp(top)[1])  # inf where it overflows
            assert _inverse_step(top, k) == want, (top, k)


def _fixed_reference(acc, a: torch.Tensor, b: torch.Tensor, chunk: int, policy: str) -> torch.Tensor:
    """The register chunk by chunk: each product cut onto 2^-frac, summed, the policy after every chunk."""
    to_grid = torch.trunc if acc.mode == "rz" else torch.round
    lo, hi = -(2.0 ** (acc.width - 1)), 2.0 ** (acc.width - 1) - 1
    n = None
    for c0 in range(0, a.shape[-1], chunk):
        part = to_grid(a[:, c0:c0 + chunk, None] * b[None, c0:c0 + chunk, :] * 2.0**acc.frac).sum(1)
        n = part if n is None else n + part
        n = n.clamp(lo, hi) if policy == "saturate" else (n - lo) % (hi - lo + 1) + lo
    return n / 2.0**acc.frac


@pytest.mark.parametrize("spec", ["fixed(16,4)/rz", "fixed(16,4)", "fixed(16,1)", "int12/rz"])
@pytest.mark.parametrize("policy", ["saturate", "wrap"])
def test_fixed_kernel_equals_the_per_chunk_register(spec, policy):
    """Products off the register's grid (the numba loops): cut onto it by truncation or ties to even, chunk sums
    that overflow a 12- or 16-bit register, saturated or wrapped after every chunk of 7 (K = 75)."""
    g = torch.Generator().manual_seed(4)
    a = torch.randn(6, 75, generator=g, dtype=torch.float64) * 40
    b = torch.randn(75, 300, generator=g, dtype=torch.float64) * 30
    b[:, 0] = 0.5 / a.abs().max()  # products below the grid's step, some at its half
    c = Compute.parse({"accumulator": spec, "chunk": 7, "overflow": policy})
    got = c.matmul(a, b)
    assert torch.equal(got, _fixed_reference(c.accumulator, a, b, 7, policy))
    units = got * 2.0**c.accumulator.frac
    lo, hi = -(2.0 ** (c.accumulator.width - 1)), 2.0 ** (c.accumulator.width - 1) - 1
    assert units.min() >= lo and units.max() <= hi and (units == units.round()).all()
    if policy == "saturate":
        assert (units == lo).any() and (units == hi).any()
    with pytest.raises(OverflowError, match=re.escape(f"accumulator {spec} overflowed: a running sum reached")):
        Compute.parse({"accumulator": spec, "chunk": 7}).matmul(a, b)


@pytest.mark.parametrize("compute", [{"accumulator": "align:13", "group": 32, "chunk": 128},
                                     {"accumulator": "fixed(32,16)/rz", "overflow": "saturate"},
                                     {"accumulator": "fixed(20,8)", "chunk": 50, "overflow": "wrap"}])
def test_kernels_equal_the_torch_loops(compute):
    """e4m3 operands (a batch of 2; tiles of rows and columns that do not divide 20 x 150): products rounded to
    fp32 are the exact products, so ``product: fp32`` (the torch loops over materialised products) must give the
    numba kernels' bits."""
    g = torch.Generator().manual_seed(8)
    e4m3 = dl.fmt("e4m3")
    a = e4m3.quantize(torch.randn(2, 20, 200, generator=g, dtype=torch.float64) * 4)
    b = e4m3.quantize(torch.randn(200, 150, generator=g, dtype=torch.float64) / 3)
    kernel = Compute.parse(compute).matmul(a, b)
    assert torch.equal(kernel, Compute.parse({**compute, "product": "fp32"}).matmul(a, b))


@pytest.mark.parametrize("backend", ["torch", "scipy"])
@pytest.mark.parametrize("precision", ["fp64", "fp32"])
def test_each_blas_gives_the_reference(monkeypatch, backend, precision):
    """The kernel on torch's MKL (held to one thread per kernel thread) and on SciPy's OpenBLAS (held to one
    thread through threadpoolctl): operands on a grid of 1/8 and 1/4 below 2 and 4 (chunk sums exact in float64
    and float32), K not a multiple of the chunk, chunks cut into pieces: the per-chunk reference bit for bit."""
    lib = accumulate.torch_blas() if backend == "torch" else accumulate.scipy_blas()
    if lib is None:
        pytest.skip("torch's library exports no BLAS on this platform; SciPy's is used")
    monkeypatch.setattr(accumulate, "blas", lambda: lib)
    monkeypatch.setattr(accumulate, "GEMM_WORK", 5000)
    g = torch.Generator().manual_seed(9)
    a = torch.randint(-16, 17, (40, 300), generator=g).double() / 8
    b = torch.randint(-16, 17, (300, 70), generator=g).double() / 4
    c = Compute.parse({"accumulator": "bf16", "chunk": 64, "precision": precision})
    assert accumulate.tiles(64, 40, 70)[2] < 64  # pieces
    got = c.matmul(a, b)
    assert torch.equal(got, _reference(c, a, b)) and not torch.equal(got, a @ b)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("precision", ["fp64", "fp32"])
def test_transposed_and_broadcast_operands_give_the_same_bits(dtype, precision):
    """Column-major operands (a weight's ``.T``, attention's ``Kᵀ``), a batch broadcast with stride 0 and a
    strided slice, float64 or float32 (read where they lie), chunk sums in float64 or float32: the bits of the
    contiguous operands, and of the same values in float64."""
    g = torch.Generator().manual_seed(11)
    a = torch.randn(3, 20, 90, generator=g).to(dtype)
    b = torch.randn(3, 90, 40, generator=g).to(dtype)
    c = Compute.parse({"accumulator": "fp16", "chunk": 16, "precision": precision})
    want = c.matmul(a, b)
    assert torch.equal(c.matmul(a.double(), b.double()), want)
    a_t = a.transpose(1, 2).contiguous().transpose(1, 2)  # column-major rows
    b_t = b.transpose(1, 2).contiguous().transpose(1, 2)
    assert a_t.stride(1) == 1 and b_t.stride(1) == 1
    for x, y in ((a_t, b), (a, b_t), (a_t, b_t)):
        assert torch.equal(c.matmul(x, y), want)
    assert torch.equal(c.matmul(a, b[:1].expand(3, 90, 40)), c.matmul(a, b[:1].repeat(3, 1, 1)))
    wide = torch.randn(3, 20, 180, generator=g).to(dtype)
    assert torch.equal(c.matmul(wide[..., ::2], b), c.matmul(wide[..., ::2].contiguous(), b))


@pytest.mark.parametrize("compute", [{"accumulator": "bf16", "chunk": 8}, {"accumulator": "fp32", "chunk": 8},
                                     {"accumulator": "fp(5,10)", "chunk": 3, "output": "bf16"},
                                     {"accumulator": "quire"}, {"accumulator": "align:13", "group": 4}])
def test_a_float32_result_is_the_float64_result_cast(compute):
    """``dtype=float32`` (what a layer asks for; the format accumulator's kernel writes it directly) is the
    float64 result cast, bias and output rounding included."""
    g = torch.Generator().manual_seed(12)
    a = torch.randn(2, 7, 30, generator=g) * 300
    b = torch.randn(30, 9, generator=g)
    bias = torch.randn(9, generator=g)
    c = Compute.parse(compute)
    got = c.matmul(a, b, bias, dtype=torch.float32)
    assert got.dtype == torch.float32 and torch.equal(got, c.matmul(a, b, bias).float())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_results_are_the_float64_result_cast(dtype):
    """A half-precision layer's result (the kernel writes only float32 and float64): the float64 result cast."""
    g = torch.Generator().manual_seed(13)
    a, b = torch.randn(5, 40, generator=g), torch.randn(40, 6, generator=g)
    c = Compute.parse({"accumulator": "bf16", "chunk": 8})
    got = c.matmul(a.to(dtype), b.to(dtype), dtype=dtype)
    assert got.dtype == dtype and torch.equal(got, c.matmul(a.to(dtype), b.to(dtype)).to(dtype))


def test_a_result_dtype_that_is_not_floating_point_is_refused():
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype, got torch.int32"):
        Compute.parse("bf16").matmul(torch.ones(2, 3), torch.ones(3, 2), dtype=torch.int32)


def test_chunk_sums_in_a_dtype_without_a_blas_are_refused():
    a, b = torch.ones(1, 2, 3), torch.ones(1, 3, 2)
    with pytest.raises(ValueError, match="sums must be torch.float32 or torch.float64, got torch.float16"):
        accumulate_matmul(a, b, 1, rounder("bf16").grid, sums=torch.float16)
