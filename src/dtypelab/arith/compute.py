"""Simulated dot products: how each product is rounded, how the products are summed, what the result is rounded to.

A :class:`Compute` (the ``compute:`` section of a layer's config) is

* ``product``: ``exact`` (default; products of formats up to 26 significant bits are exact in float64, and an
  LP product -- an add of the two logarithms -- is exact in the log domain) or a format each product is rounded to;
* ``accumulator`` (one entry of :data:`ACCUMULATORS`):

  - a format and rounding (``fp32``, ``bf16``, ``fp16``, ``fp(5,10)/rz`` ...): the running sum is rounded to it
    after each add. ``chunk: C`` (default 1) adds the products ``C`` at a time: the ``C`` products of a chunk
    are summed in float64 (a matmul), that sum is added to the running sum in float64 (both exact whenever the
    running sum and the products span fewer than 53 bits, as products of 8- and 16-bit formats on chunks of
    practical length do), and the result is rounded once; ``chunk: 1`` rounds after every product (a sequential
    accumulator). ``precision: fp32`` does those sums and adds in float32 instead, as a float32 register would
    (faster; bits below float32's are lost before the accumulator's rounding).
    ``order: pairwise`` adds the chunk sums in a binary tree, rounding at every node, instead of left to right;
  - ``quire``: exact accumulation, one rounding at the end (the posit standard's fused dot product);
  - ``align:k[/rz|/rne]``: the tensor-core model. The products of a ``group`` (default: the whole chunk) and
    the running tensor-core sum are aligned to the largest exponent among them and each is cut to ``k`` bits
    below it (``rz`` truncates, the default; ``rne`` rounds), then summed exactly; every ``chunk`` products
    (default K: never) the tensor-core sum is added into the ``promote`` format (default fp32);
  - ``int32`` / ``fixed(W,F)[/rz|/rne]``: a W-bit two's-complement fixed-point register with F fraction bits, in
    units of the operands' scales (exact with power-of-two scales; others are divided out in float64); each
    product is rounded onto that grid (``rne`` default,
    ``rz`` truncates) and ``overflow`` says what happens past it: ``error`` (OverflowError, default),
    ``saturate`` or ``wrap``, checked after every chunk (default: one chunk) and after the bias;

* ``output``: the format the layer's result is rounded to (default: the layer's dtype, float32).

No loop runs over K in Python: IEEE-style grids on the CPU run in one numba kernel over tiles of the output, each
kept in cache while BLAS sums its chunks one by one and the kernel adds and rounds them; it reads the layer's
float32 operands where they lie (:func:`~dtypelab.kernels.accumulate.accumulate_matmul`; elsewhere the operands
are converted to float64 and each chunk is one multiply-add and one rounding), and
materialised products (rounded products, align, fixed point off its grid) are computed one chunk (or group) at
a time for all outputs at once.

Example:
    >>> import torch
    >>> a = torch.tensor([[1.0, 2.0**-12, 2.0**-12, 2.0**-12]], dtype=torch.float64)
    >>> b = torch.ones(4, 1, dtype=torch.float64)
    >>> Compute.parse({"accumulator": "fp16"}).matmul(a, b).item()          # each 2^-12 is lost against 1
    1.0
    >>> Compute.parse({"accumulator": "quire", "output": "fp16"}).matmul(a, b).item()
    1.0009765625
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from dtypelab.arith.exact import exact_matmul
from dtypelab.arith.numbers import Rounder, rounder
from dtypelab.kernels.accumulate import accumulate_matmul
from dtypelab.kernels.gridsum import align_matmul, fixed_matmul

ORDERS = ("sequential", "pairwise")
OVERFLOWS = ("error", "saturate", "wrap")
PRECISIONS = ("fp64", "fp32")
BUDGET = 1 << 23  # float64 elements materialised at once (64 MiB)


# ---- accumulators ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FormatAcc:
    """A running sum rounded to a format after every add (of a product, or of a chunk's float64 sum)."""

    fmt: Rounder
    kind = "format"
    default_chunk = 1

    def __str__(self) -> str:
        return str(self.fmt)

    def run(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, c: Compute,
            dtype: torch.dtype = torch.float64) -> torch.Tensor:
        r = self.fmt
        dt = torch.float32 if c.precision == "fp32" else torch.float64
        chunk = min(c.chunk or self.default_chunk, a.shape[-1])
        if c.order == "sequential" and c.product.exact and r.grid is not None and a.device.type == "cpu":
            return accumulate_matmul(a, b, chunk, r.grid, bias, dtype, sums=dt)  # numba: tiles in cache, BLAS
        if c.order == "pairwise" or not c.product.exact:
            parts = _chunk_sums(*_float64(a, b), c)
            if c.order == "pairwise":
                level = list(parts)
                while len(level) > 1:
                    nxt = [r(level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)]
                    level = nxt + ([level[-1]] if len(level) % 2 else [])
                s = r(level[0])
            else:
                s = r(next(parts))
                for p in parts:
                    s = r(s + p)
        else:  # one multiply-add per chunk into the running sum (BLAS, in place), then its rounding
            a_, b_ = a.to(dt), b.to(dt)
            s = torch.zeros(a.shape[0], a.shape[1], b.shape[-1], dtype=dt, device=a.device)
            for i in range(0, a.shape[-1], chunk):
                p = torch.baddbmm(s, a_[..., i:i + chunk], b_[..., i:i + chunk, :], out=s)
                s.copy_(p.to(torch.float32) if r.spec == "fp32" else r(p))
            s = s.to(torch.float64)
        return (s if bias is None else r(s + bias)).to(dtype)


@dataclass(frozen=True)
class Quire:
    """Exact accumulation, one rounding at the end (to the output format)."""

    kind = "quire"
    default_chunk = None

    def __str__(self) -> str:
        return "quire"

    def run(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, c: Compute,
            dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return exact_matmul(*_float64(a, b), bias).to(dtype)


@dataclass(frozen=True)
class Align:
    """The tensor-core model: products aligned to the largest exponent of their group, cut to ``k`` bits."""

    k: int
    mode: str = "rz"
    kind = "align"
    default_chunk = None

    def __str__(self) -> str:
        return f"align:{self.k}" + ("" if self.mode == "rz" else f"/{self.mode}")

    def _aligned_sum(self, prods: torch.Tensor, carry: torch.Tensor | None) -> torch.Tensor:
        """The exact sum of the group's products ``[Bt, M, G, N]`` (and the running ``carry``), each cut to
        ``k`` bits below the largest exponent among them."""
        top = prods.abs().amax(-2)
        if carry is not None:
            top = torch.maximum(top, carry.abs())
        _, e = torch.frexp(top)
        inv = torch.ldexp(torch.ones(e.shape, dtype=prods.dtype, device=prods.device), self.k - e)  # 1 / grid
        cut = torch.trunc_ if self.mode == "rz" else torch.round_
        q = cut(prods * inv.unsqueeze(-2)).sum(-2)  # integers below 2^k each: the sum is exact
        if carry is not None:
            q += cut(carry * inv)
        return q / inv

    def run(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, c: Compute,
            dtype: torch.dtype = torch.float64) -> torch.Tensor:
        a, b = _float64(a, b)
        k = a.shape[-1]
        chunk = c.chunk or k
        group = min(c.group or chunk, chunk)
        promote = c.promote

        def block(a_blk: torch.Tensor, b_blk: torch.Tensor) -> torch.Tensor:
            s = None
            for c0 in range(0, k, chunk):
                tc = None
                for g0 in range(c0, min(c0 + chunk, k), group):
                    g1 = min(g0 + group, c0 + chunk, k)
                    prods = _products(a_blk[..., g0:g1], b_blk[..., g0:g1, :], c.product)  # [Bt, M, G, N]
                    tc = self._aligned_sum(prods, tc)
                s = promote(tc) if s is None else promote(s + tc)
            return s

        if a.device.type == "cpu" and c.product.exact and promote.grid is not None:
            s = align_matmul(a, b, self.k, self.mode == "rne", chunk, group, promote.grid)
        else:
            s = _by_rows(a, b, block, per_row=b.shape[-1] * min(group + 1, k + 1))
        return (s if bias is None else promote(s + bias)).to(dtype)


@dataclass(frozen=True)
class Fixed:
    """A ``width``-bit two's-complement fixed-point register with ``frac`` fraction bits (``int32``: frac 0)."""

    width: int
    frac: int = 0
    mode: str = "rne"
    kind = "fixed"
    default_chunk = None
    needs_scales = True

    def __str__(self) -> str:
        base = f"int{self.width}" if self.frac == 0 else f"fixed({self.width},{self.frac})"
        return base + ("" if self.mode == "rne" else f"/{self.mode}")

    def _grid(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in units of 2^-frac, rounded onto integers by the mode."""
        q = torch.ldexp(x, torch.tensor(self.frac, device=x.device))
        return torch.trunc(q) if self.mode == "rz" else torch.round(q)

    @property
    def bounds(self) -> tuple[float, float]:
        """The register's least and greatest integers."""
        return -(2.0 ** (self.width - 1)), 2.0 ** (self.width - 1) - 1

    def _overflow(self, n: torch.Tensor, policy: str) -> torch.Tensor:
        lo, hi = self.bounds
        if policy == "saturate":
            return n.clamp(lo, hi)
        if policy == "wrap":
            return torch.remainder(n - lo, 2.0**self.width) + lo
        if n.numel():
            self._check(float(n.min()), float(n.max()))
        return n

    def _register(self, sums: Iterable[torch.Tensor], policy: str) -> torch.Tensor:
        """The register after each chunk sum is added (the policy applied each time)."""
        n = None
        for part in sums:
            n = self._overflow(part if n is None else n + part, policy)
        return n

    def _check(self, low: float, high: float) -> None:
        """OverflowError where running sums reached ``[low, high]`` outside the register."""
        lo, hi = self.bounds
        if low < lo or high > hi:
            raise OverflowError(f"accumulator {self} overflowed: a running sum reached [{low:.0f}, {high:.0f}] "
                                f"(units of 2^-{self.frac}), outside [{lo:.0f}, {hi:.0f}]; set overflow: saturate "
                                f"or wrap, or a wider accumulator")

    def run(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, c: Compute,
            dtype: torch.dtype = torch.float64) -> torch.Tensor:
        a, b = _float64(a, b)
        k = a.shape[-1]
        chunk = c.chunk or k
        on_grid = c.product.exact and _integers(a) and _integers(torch.ldexp(b, torch.tensor(self.frac)))
        if on_grid:  # integer x (integer / 2^frac): every product is on the grid already, chunk sums are exact
            parts = _chunk_sums(a, b, replace(c, chunk=chunk))
            n = self._register((torch.ldexp(p, torch.tensor(self.frac)) for p in parts), c.overflow)
        elif a.device.type == "cpu" and c.product.exact:  # each product cut onto the grid in numba loops
            n, low, high = fixed_matmul(a, b, self.bounds, self.frac, self.mode == "rne", chunk, c.overflow)
            if c.overflow == "error":
                self._check(low, high)
        else:
            def chunk_sum(c0: int) -> torch.Tensor:  # the chunk's products cut onto the grid, summed
                return _by_rows(a[..., c0:c0 + chunk], b[..., c0:c0 + chunk, :],
                                lambda x, y: self._grid(_products(x, y, c.product)).sum(-2),
                                per_row=b.shape[-1] * min(chunk, k))
            n = self._register((chunk_sum(c0) for c0 in range(0, k, chunk)), c.overflow)
        if bias is not None:
            n = self._overflow(n + self._grid(bias), c.overflow)
        return torch.ldexp(n, torch.tensor(-self.frac)).to(dtype)


def _float64(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The operands in float64, where the accumulators compute (``_matmul`` hands them over in their dtype)."""
    return a.to(torch.float64), b.to(torch.float64)


def _integers(x: torch.Tensor) -> bool:
    return bool((x == torch.round(x)).all())


Accumulator = FormatAcc | Quire | Align | Fixed

_FIXED_MODES = ("rne", "rz")
ACCUMULATORS: list[tuple[str, Callable[[re.Match], Accumulator]]] = [
    (r"quire", lambda m: Quire()),
    (r"align:(\d+)(?:/(rz|rne))?", lambda m: Align(int(m[1]), m[2] or "rz")),
    (r"int(\d+)(?:/(rz|rne))?", lambda m: Fixed(int(m[1]), 0, m[2] or "rne")),
    (r"fixed\((\d+),\s*(-?\d+)\)(?:/(rz|rne))?", lambda m: Fixed(int(m[1]), int(m[2]), m[3] or "rne")),
]


def accumulator(spec: str | Accumulator) -> Accumulator:
    """Parse an accumulator spec (see the module docstring); ValueError naming what is valid."""
    if not isinstance(spec, str):
        return spec
    text = spec.strip().replace(" ", "")
    for pattern, build in ACCUMULATORS:
        m = re.fullmatch(pattern, text, flags=re.IGNORECASE)
        if m:
            acc = build(m)
            if isinstance(acc, Align) and not 1 <= acc.k <= 40:
                raise ValueError(f"accumulator {spec!r}: align:k needs 1 <= k <= 40")
            if isinstance(acc, Fixed) and not (16 <= acc.width <= 52 or text.lower().startswith("int")):
                raise ValueError(f"accumulator {spec!r}: fixed(W,F) needs 16 <= W <= 52")
            if isinstance(acc, Fixed) and not 2 <= acc.width <= 52:
                raise ValueError(f"accumulator {spec!r}: intW needs 2 <= W <= 52")
            return acc
    try:
        return FormatAcc(rounder(text))
    except ValueError as e:
        raise ValueError(f"accumulator {spec!r}: not quire, align:k[/rz|rne], intW or fixed(W,F)[/rz|rne], and "
                         f"not a number format ({e})") from None


# ---- the compute spec ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compute:
    """How a layer computes its dot products (see the module docstring)."""

    accumulator: Accumulator = field(default_factory=lambda: FormatAcc(rounder("fp32")))
    product: Rounder = field(default_factory=lambda: rounder("exact"))
    chunk: int | None = None
    group: int | None = None
    order: str = "sequential"
    overflow: str = "error"
    promote: Rounder = field(default_factory=lambda: rounder("fp32"))
    output: Rounder | None = None
    precision: str = "fp64"

    FIELDS = ("product", "accumulator", "chunk", "group", "order", "overflow", "promote", "output", "precision")

    @classmethod
    def parse(cls, spec: Compute | Mapping[str, Any] | str) -> Compute:
        """A Compute from a mapping of its fields, or an accumulator spec alone (``"bf16"``)."""
        if isinstance(spec, Compute):
            return spec
        if isinstance(spec, str):
            spec = {"accumulator": spec}
        if not isinstance(spec, Mapping):
            raise ValueError(f"compute must be a mapping of {', '.join(cls.FIELDS)} or an accumulator spec, "
                             f"got {type(spec).__name__}")
        unknown = sorted(set(spec) - set(cls.FIELDS))
        if unknown:
            raise ValueError(f"compute: unknown key(s) {unknown}; valid: {', '.join(cls.FIELDS)}")
        kw: dict[str, Any] = {}
        if spec.get("accumulator") is not None:
            kw["accumulator"] = accumulator(str(spec["accumulator"]))
        for key in ("product", "promote"):
            if spec.get(key) is not None:
                kw[key] = rounder(str(spec[key]))
        if spec.get("output") is not None:
            kw["output"] = rounder(str(spec["output"]))
        for key in ("chunk", "group"):
            v = spec.get(key)
            if v is not None:
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"compute: {key} must be a positive integer, got {v!r}")
                kw[key] = v
        for key, valid in (("order", ORDERS), ("overflow", OVERFLOWS), ("precision", PRECISIONS)):
            v = spec.get(key)
            if v is not None:
                if v not in valid:
                    raise ValueError(f"compute: {key} {v!r}; valid: {', '.join(valid)}")
                kw[key] = v
        c = cls(**kw)
        if isinstance(c.accumulator, Quire) and not c.product.exact:
            raise ValueError("compute: the quire accumulates exact products; set product: exact (or leave it out)")
        if c.group is not None and not isinstance(c.accumulator, Align):
            raise ValueError("compute: group is the alignment group of the align:k accumulator only")
        if (c.order == "pairwise" or c.precision != "fp64") and not isinstance(c.accumulator, FormatAcc):
            raise ValueError("compute: order and precision apply to format accumulators (fp32, bf16, ...)")
        return c

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from the defaults, as plain data (``Compute.parse(c.to_dict()) == c``)."""
        default = Compute()
        out: dict[str, Any] = {}
        for key in self.FIELDS:
            v = getattr(self, key)
            if v != getattr(default, key):
                out[key] = str(v) if isinstance(v, (Rounder, *_ACC_TYPES)) else v
        return out

    def __str__(self) -> str:
        parts = [f"acc {self.accumulator}"]
        if self.chunk:
            parts.append(f"chunk {self.chunk}")
        if self.group:
            parts.append(f"group {self.group}")
        if not self.product.exact:
            parts.append(f"product {self.product}")
        if self.order != "sequential":
            parts.append(self.order)
        if self.output is not None:
            parts.append(f"out {self.output}")
        return ", ".join(parts)

    @property
    def needs_scales(self) -> bool:
        """The accumulator works in units of the operands' scales (fixed point)."""
        return isinstance(self.accumulator, Fixed)

    def matmul(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
               scales: tuple[torch.Tensor | float, torch.Tensor | float] = (1.0, 1.0),
               dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``a @ b (+ bias)`` (``a [..., M, K]``, ``b [..., K, N]``, broadcast batch dims) as this compute does
        it, output rounding included, in ``dtype`` (float64, or the layer's dtype: the CPU kernel of a format
        accumulator writes it directly). ``scales`` (fixed point only): power-of-two scales of ``a`` (one, or one
        per row) and ``b`` (one, or one per column); the register holds ``a/s_a * b/s_b``.
        """
        if not dtype.is_floating_point:
            raise ValueError(f"matmul: dtype must be a floating-point dtype, got {dtype}")
        with torch.no_grad():
            return self._matmul(a.detach(), b.detach(), None if bias is None else bias.detach(), scales, dtype)

    def _matmul(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None,
                scales: tuple[torch.Tensor | float, torch.Tensor | float], dtype: torch.dtype) -> torch.Tensor:
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
        if b.shape[-2] != k:
            raise ValueError(f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not match")
        a3 = a.expand(*batch, m, k).reshape(-1, m, k)  # in their dtype: each accumulator converts what it reads
        b3 = b.expand(*batch, k, n).reshape(-1, k, n)
        bias3 = None if bias is None else bias.to(torch.float64).expand(*batch, m, n).reshape(-1, m, n)
        unit = None
        if self.needs_scales:
            sa, sb = (torch.as_tensor(s, dtype=torch.float64, device=a.device) for s in scales)
            sa = sa.reshape(-1, 1) if sa.numel() > 1 else sa.reshape(())
            sb = sb.reshape(1, -1) if sb.numel() > 1 else sb.reshape(())
            a3, b3 = a3.to(torch.float64) / sa, b3.to(torch.float64) / sb
            unit = sa * sb
            bias3 = None if bias3 is None else bias3 / unit
        if k == 0:
            out = torch.zeros(a3.shape[0], m, n, dtype=torch.float64, device=a.device)
            out = out if bias3 is None else out + bias3
        else:  # in float64 where the unit or the output rounding still applies, or the kernels write no dtype
            direct = unit is None and self.output is None and dtype in (torch.float32, torch.float64)
            out = self.accumulator.run(a3, b3, bias3, self, dtype if direct else torch.float64)
        if unit is not None:
            out = out * unit
        if self.output is not None:
            out = self.output(out)
        return out.to(dtype).reshape(*batch, m, n)


_ACC_TYPES = (FormatAcc, Quire, Align, Fixed)


# ---- helpers -----------------------------------------------------------------------------------------------------


def _products(a: torch.Tensor, b: torch.Tensor, product: Rounder) -> torch.Tensor:
    """Every product ``a[:, m, j] * b[:, j, n]`` as ``[Bt, M, J, N]``, rounded to the product format."""
    p = a.unsqueeze(-1) * b.unsqueeze(-3)
    return p if product.exact else product(p)


def _by_rows(a: torch.Tensor, b: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
             per_row: int) -> torch.Tensor:
    """``fn(a_rows, b)`` over blocks of rows of ``a`` sized to materialise at most :data:`BUDGET` elements."""
    bt, m = a.shape[0], a.shape[1]
    rows = max(1, BUDGET // max(1, per_row * bt))
    if rows >= m:
        return fn(a, b)
    return torch.cat([fn(a[:, i:i + rows], b) for i in range(0, m, rows)], dim=1)


def _chunk_sums(a: torch.Tensor, b: torch.Tensor, c: Compute) -> Iterator[torch.Tensor]:
    """The float64 sum of each chunk of products, ``[Bt, M, N]`` one chunk at a time: a matmul of the chunk's
    slices when products are exact, materialised rounded products otherwise."""
    k, n = a.shape[-1], b.shape[-1]
    chunk = min(c.chunk or c.accumulator.default_chunk or k, k)
    for i in range(0, k, chunk):
        a_c, b_c = a[..., i:i + chunk], b[..., i:i + chunk, :]
        if c.product.exact:
            yield a_c @ b_c
        else:
            yield _by_rows(a_c, b_c, lambda x, y: _products(x, y, c.product).sum(-2), n * chunk)


__all__ = ["Compute", "FormatAcc", "Quire", "Align", "Fixed", "accumulator", "ACCUMULATORS", "ORDERS", "OVERFLOWS",
           "PRECISIONS"]
