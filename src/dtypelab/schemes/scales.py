"""Scale rules: one scale per row of grouped values, with ``x ≈ Q(x / s) * s``.

A rule is a :class:`ScaleRule` object in the :data:`RULES` registry. It declares what it is — how its scales
are stored by default, whether elements are clipped to ±max before rounding, whether it needs blocks, whether it
can be computed once at calibration (static), which fused block kernel computes it — so no caller compares rule
names. Its :meth:`ScaleRule.scales` takes rows ``[groups, size]`` (float64, unless the rule reads rows in their
own dtype) and the element range, and returns ``s`` of shape ``[groups]`` (float64). An all-zero row gets
``s = 1`` (except the ``mx`` rules, which follow the OCP spec).

NaN and infinities set no scale: every rule sees them as zeros (the scheme hands it rows cleaned so), and the
elements themselves then round as the format rounds NaN and ±inf, after scaling. The exception is the ``mx``
rules (``nonfinite_is_nan``): as the OCP spec says, a block holding a NaN or an infinity gets a NaN shared scale,
and the whole block decodes to NaN. A new rule is one class here, registered with
:func:`register_rule`.

* ``none`` — ``s = 1``.
* ``absmax`` — the row's max |x| (NaN elements ignored) maps to the format's max (1.0 for NF4 / DT).
* ``pow2`` — the lab's power-of-two observer done right: ``s = 2^k``, ``k = ceil(log2(absmax / max))``
  (the smallest power of two that clips nothing), clamped to ``[-POW2_SHIFT, POW2_SHIFT]``. (Seed 004
  clamps ``log2`` without rounding it, so its "power of two" scale is not one.)
* ``log2-hist`` — PositTune (a): a 100-bin histogram of ``log2|x|`` over its [min, max]; ``s = 2^c`` with ``c``
  the centre of the fullest bin (not rounded), computed by :mod:`dtypelab.kernels.log2hist`. Exact zeros are
  left out (with PositTune's ``log2(|x|+eps)`` the zeros of a ReLU output would form the fullest bin), and so are
  NaN and infinities.
* ``log2-energy`` — PositTune (c): ``s = 2^round(Σx² log2|x| / Σx²)``.
* ``sqnr`` — PositTune (b): ``s = 2^-k`` for the ``k`` in ``[-5, 4]`` of highest SQNR (first on ties).
* ``mse`` — clipping search: ``s = r * absmax / max`` for the ``r`` in ``linspace(1, 0.2, 41)`` of lowest MSE.
* ``percentile:P`` — a rule family (``RULE_FAMILIES``; the text after the colon is its argument): the row's
  ``P``-th percentile of ``|x|`` (``torch.quantile``'s linear interpolation) maps to the format's max. The
  canonical form is the shortest text of the float (``percentile:99.99``, ``percentile:100``).
* ``entropy`` — TensorRT's KL-divergence calibration for any format: 2048 bins of ``|x|`` over [0, absmax],
  every clip point from 128 bins up; the quantized histogram is made by rounding the bin centres with the
  format itself (its own value set, so posits, LP and codebooks too), see :func:`kl_divergences`.
* ``mx`` — OCP Microscaling: shared ``X = 2^(floor(log2 absmax) - emax)``, ``emax = floor(log2 max)`` of the
  element format, exponent clamped to >= -127 and NaN above 127; an all-zero block uses absmax = 2^-126.
  Integer elements are fixed point (MXINT8: k/64), so ``s = X * 2^-(n-2)``. The result is already E8M0-exact.
  Its variants, named after torchao 0.18's ``ScaleCalculationMode`` (``mx`` is its FLOOR), change only the
  exponent (clamp, NaN, all-zero rule, clipping and E8M0 storage as ``mx``):

  - ``mx-ceil`` (CEIL): ``X = 2^(ceil(log2 absmax) - emax)``: nothing clips, small elements may flush to zero.
  - ``mx-even`` (EVEN): ``X = 2^(floor(log2 r) - emax)``, ``r`` the absmax rounded half up to the element's
    ``m`` fraction bits (so the exponent goes up where the absmax's mantissa is >= ``2 - 2^-(m+1)``; at that
    tie half up is half to even). ``m`` is the fraction bits of floats and ``n-2`` of signed integers; posits,
    LP and codebooks have no fixed count, and ``mx-even`` refuses them.
  - ``mx-rceil`` (RCEIL, cuBLAS's UE8M0 recipe): ``X = 2^ceil(log2(absmax / max))``, the smallest power of two
    that clips nothing (``pow2`` with E8M0's range instead of ±24).

  Exponents are computed in integers from ``frexp`` of the absmax, so they are exact for float64 inputs too.
  The element may be any **signed** format (a positive max and negative values): the definition only needs
  its ``emax`` (and ``m`` for ``mx-even``): eXmY / fp(e,m) minifloats such as ``fp(3,2)`` or ``e3m4``, signed
  integers, posits (whose max is a power of two, so FLOOR clips a block's top binade to maxpos), LP and signed
  codebooks. Unsigned formats (uint, unsigned floats, E8M0) have no -max to clip to and raise ValueError.
  torchao's own ``to_mx`` agrees with these rules bit for bit, scales and elements, except in a block whose
  scale is 2^-127 (E8M0 code 0): its FLOOR, CEIL and EVEN divide that block by 2^-126 while storing 2^-127,
  and its RCEIL leaves it unscaled; dtypelab divides by the 2^-127 it stores. torchao's RCEIL (eager) takes the
  ceil of a float32 log2 of a float32 quotient, both of which round: a few float32 steps above ``max * 2^k`` it
  stores 2^k, one code below the exact ceiling dtypelab takes. torchao also gives a block holding an infinity a
  finite scale (FLOOR: ``2^(128 - emax)``), where the OCP spec and dtypelab make it NaN.

Example:
    >>> import torch
    >>> rows = torch.tensor([[0.5, -3.0, 1.0]], dtype=torch.float64)
    >>> RULES["pow2"].scales(rows, ElementRange(127.0), None).tolist()   # 3/127 -> 2^-5
    [0.03125]
    >>> RULES["mx"].clips, RULES["mx"].default_storage, RULES["absmax"].static
    (True, 'e8m0', True)
    >>> blocks = torch.tensor([[5.0, 1.0], [7.5, 1.0]], dtype=torch.float64)  # absmax 2^2 * 1.25, 2^2 * 1.875
    >>> e2m1 = ElementRange(6.0, mbits=1)                                     # max 6 = 2^2 * 1.5, emax 2
    >>> {r: RULES[r].scales(blocks, e2m1, None).tolist() for r in ("mx", "mx-ceil", "mx-even", "mx-rceil")}
    {'mx': [1.0, 1.0], 'mx-ceil': [2.0, 2.0], 'mx-even': [1.0, 2.0], 'mx-rceil': [1.0, 2.0]}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from dtypelab.formats import Format
from dtypelab.kernels.backend import backend_for
from dtypelab.schemes.granularity import Granularity, PerBlock

POW2_SHIFT = 24
SQNR_EXPONENTS = range(-5, 5)
MSE_RATIOS = torch.linspace(1.0, 0.2, 41, dtype=torch.float64)
HIST_BINS = 100
ENTROPY_BINS = 2048  # TensorRT's histogram of |x|, and its first clip point (128 bins kept)
ENTROPY_MIN_BINS = 128


@dataclass(frozen=True)
class ElementRange:
    """The symmetric range a scale maps onto, the affine zero point (unsigned integer formats), and for MX
    the element's fixed-point ``unit`` (MXINT8 elements are k/64: unit 2^-6), its largest binade ``emax`` and
    ``mbits``, the fraction bits it has there (None where it has no fixed count: posits, LP, codebooks)."""

    max: float
    zero_point: float = 0.0
    unit: float = 1.0
    mbits: int | None = None

    @property
    def emax(self) -> int:
        return math.frexp(self.max * self.unit)[1] - 1  # floor(log2), exactly


Quantizer = Callable[..., torch.Tensor]  # (rows / s, out=None) -> Q(rows / s), for rules that search


class ScaleRule:
    """Base of the scale rules. Subclasses set ``name`` and the declarations below and define :meth:`scales`."""

    name: ClassVar[str]
    default_storage: ClassVar[str] = "fp32"  # how its scales are stored unless the scheme says otherwise
    clips: ClassVar[bool] = False  # elements are clipped to ±max before rounding (MX)
    static: ClassVar[bool] = True  # can be computed once, at calibration, for activations
    stored_exact: ClassVar[bool] = False  # its scales are already exact in its default storage
    native_dtype: ClassVar[bool] = False  # reads rows in their own dtype: no float64 copy is made
    trials: ClassVar[int] = 0  # trial quantizations it runs per tensor (the search rules)
    nonfinite_is_nan: ClassVar[bool] = False  # a group holding NaN or inf gets a NaN scale (else: ignored)
    fused: ClassVar[str | None] = None  # the fused block kernel's rule, used with the default storage only
    argument: ClassVar[str | None] = None  # a rule family's argument (written NAME:ARG), None for plain rules

    @classmethod
    def from_argument(cls, arg: str) -> ScaleRule:
        """The family's rule for the text after ``NAME:`` (families only)."""
        raise TypeError(f"scale rule {cls.name!r} takes no argument")

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"ScaleRule({self.name!r})"

    def check(self, element: Format, granularity: Granularity) -> None:
        """Raise ValueError when the rule cannot be used with this element format and granularity."""

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        raise NotImplementedError


RULES: dict[str, ScaleRule] = {}
RULE_FAMILIES: dict[str, type[ScaleRule]] = {}  # rules with an argument, written NAME:ARG


def register_rule(cls: type[ScaleRule]) -> type[ScaleRule]:
    """Class decorator: add an instance of the rule to :data:`RULES` under its ``name``; a rule that takes an
    argument (its ``argument`` names it) goes to :data:`RULE_FAMILIES`, and ``NAME:ARG`` makes one through its
    ``from_argument``."""
    if cls.argument is None:
        RULES[cls.name] = cls()
    else:
        RULE_FAMILIES[cls.name] = cls
    return cls


def valid_rules() -> list[str]:
    """Every rule name, and the form of every rule family (``percentile:P``), for error messages.

    Example:
        >>> "mse" in valid_rules() and "percentile:P" in valid_rules()
        True
    """
    return [*RULES, *(f"{name}:{cls.argument}" for name, cls in RULE_FAMILIES.items())]


def scale_rule(spec: str | ScaleRule) -> ScaleRule:
    """The rule named ``spec`` (a ScaleRule passes through): a name in :data:`RULES`, or ``NAME:ARG`` of a
    family in :data:`RULE_FAMILIES`; a miss lists the valid rules.

    Example:
        >>> str(scale_rule("Percentile:99.990")), scale_rule("mse") is RULES["mse"]
        ('percentile:99.99', True)
    """
    if isinstance(spec, ScaleRule):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a scale rule must be a name or ScaleRule, got {type(spec).__name__}")
    text = spec.strip().lower()
    found = RULES.get(text)
    if found is not None:
        return found
    name, sep, arg = text.partition(":")
    family = RULE_FAMILIES.get(name)
    if family is None:
        raise ValueError(f"unknown scale rule {spec!r}; valid: {', '.join(valid_rules())}")
    if not sep:
        raise ValueError(f"scale rule {spec!r} needs its argument: {name}:{family.argument}")
    return family.from_argument(arg)


def _absmax(rows: torch.Tensor) -> torch.Tensor:
    return rows.abs().amax(dim=1)


def _nonzero_or_one(s: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    return torch.where(amax > 0, s, torch.ones_like(s))


@register_rule
class NoRule(ScaleRule):
    name = "none"
    default_storage = "none"
    native_dtype = True
    fused = "none"

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        return torch.ones(rows.shape[0], dtype=torch.float64, device=rows.device)


@register_rule
class Absmax(ScaleRule):
    name = "absmax"
    fused = "absmax"

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        amax = _absmax(torch.where(torch.isnan(rows), 0.0, rows))  # a NaN element stays NaN; it sets no scale
        return _nonzero_or_one(amax / rng.max, amax)


@register_rule
class Pow2(ScaleRule):
    name = "pow2"
    default_storage = "e8m0"

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        amax = _absmax(rows)
        k = torch.ceil(torch.log2(amax / rng.max)).clamp(-POW2_SHIFT, POW2_SHIFT)
        return _nonzero_or_one(torch.exp2(k), amax)


@register_rule
class Log2Hist(ScaleRule):
    name = "log2-hist"
    native_dtype = True

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        centres = backend_for(rows.device).log2_hist_centres(rows, HIST_BINS).to(rows.device)
        return torch.where(torch.isnan(centres), 1.0, torch.exp2(centres))


@register_rule
class Log2Energy(ScaleRule):
    name = "log2-energy"

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        sq = rows * rows
        logs = torch.log2(torch.where(rows != 0, rows.abs(), torch.ones_like(rows)))
        energy = sq.sum(dim=1)
        safe = torch.where(energy > 0, energy, torch.ones_like(energy))
        return _nonzero_or_one(torch.exp2(torch.round((sq * logs).sum(dim=1) / safe)), energy)


def _squared_error(rows: torch.Tensor, s: torch.Tensor, q: Quantizer) -> torch.Tensor:
    """Per row, ``Σ (Q(x / s) * s - x)²``, computed in one buffer."""
    t = torch.div(rows, s, out=torch.empty(rows.shape, dtype=rows.dtype, device=rows.device))
    return q(t, out=t).mul_(s).sub_(rows).square_().sum(dim=1)


def _best(rows: torch.Tensor, candidates: torch.Tensor, q: Quantizer) -> torch.Tensor:
    """Per row, the candidate scale (candidates ``[k, groups]``) with the lowest error (first on ties)."""
    errors = torch.stack([_squared_error(rows, s[:, None], q) for s in candidates])
    return candidates.gather(0, errors.argmin(dim=0, keepdim=True)).squeeze(0)


@register_rule
class Sqnr(ScaleRule):
    name = "sqnr"
    trials = len(SQNR_EXPONENTS)

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        # Highest SQNR = lowest error energy per row (signal energy is fixed).
        k = torch.tensor(list(SQNR_EXPONENTS), dtype=rows.dtype, device=rows.device)
        candidates = torch.exp2(-k)[:, None].expand(-1, rows.shape[0])
        return _nonzero_or_one(_best(rows, candidates, q), _absmax(rows))


@register_rule
class Mse(ScaleRule):
    name = "mse"
    trials = len(MSE_RATIOS)

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        amax = _absmax(rows)
        base = _nonzero_or_one(amax / rng.max, amax)
        candidates = MSE_RATIOS.to(rows.device)[:, None] * base[None, :]
        return _best(rows, candidates, q)


def _number_text(v: float) -> str:
    """The shortest text that reads back as ``v`` (``99.99``, ``100``)."""
    text = repr(float(v))
    return text[:-2] if text.endswith(".0") else text


@register_rule
@dataclass(frozen=True)
class Percentile(ScaleRule):
    """``percentile:P``: the row's ``P``-th percentile of ``|x|`` (linear interpolation between order statistics,
    as ``torch.quantile``) maps to the format's max; a row whose percentile is 0 falls back to ``absmax``.

    Example:
        >>> import torch
        >>> rows = torch.arange(101, dtype=torch.float64)[None]   # |x| = 0 .. 100
        >>> Percentile(90.0).scales(rows, ElementRange(9.0), None).tolist(), str(Percentile(99.990))
        ([10.0], 'percentile:99.99')
    """

    name: ClassVar[str] = "percentile"
    argument: ClassVar[str] = "P"
    p: float = 99.99

    def __post_init__(self) -> None:
        p = float(self.p)
        if not 0.0 < p <= 100.0:
            raise ValueError(f"percentile:{self.p}: P must be a number in (0, 100], e.g. percentile:99.99")
        object.__setattr__(self, "p", p)

    @classmethod
    def from_argument(cls, arg: str) -> Percentile:
        try:
            p = float(arg)
        except ValueError:
            raise ValueError(f"percentile:{arg}: P must be a number in (0, 100], e.g. percentile:99.99") from None
        return cls(p)

    def __str__(self) -> str:
        return f"{self.name}:{_number_text(self.p)}"

    def __repr__(self) -> str:
        return f"ScaleRule({str(self)!r})"

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        a = rows.abs().sort(dim=1).values
        amax = a[:, -1] if a.shape[1] else torch.zeros(rows.shape[0], dtype=rows.dtype, device=rows.device)
        rank = self.p / 100.0 * (a.shape[1] - 1)
        below, above = a[:, math.floor(rank)], a[:, math.ceil(rank)]
        value = torch.lerp(below, above, rank - math.floor(rank))
        return torch.where(value > 0, value / rng.max, _nonzero_or_one(amax / rng.max, amax))


def _entropy_groups(rng: ElementRange, q: Quantizer, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """For every candidate clip ``i`` (bins kept, ``ENTROPY_MIN_BINS .. ENTROPY_BINS``), the group of each kept
    bin: bins whose centres round to the same value of the format, with the clip point mapped to its max, are
    one group (groups numbered from 0 along the bins; bins past the clip get the spare group ``ENTROPY_BINS``).
    The centre of bin ``j`` of ``i`` is ``(j + 1/2) / i * max`` in the format's units, whatever the data."""
    kept = torch.arange(ENTROPY_MIN_BINS, ENTROPY_BINS + 1, device=device)
    bins = torch.arange(ENTROPY_BINS, device=device)
    inside = bins[None, :] < kept[:, None]
    t = ((bins[None, :] + 0.5) / kept[:, None]).to(dtype) * rng.max
    levels = q(torch.where(inside, t, torch.zeros_like(t)))
    starts = torch.ones_like(inside)
    starts[:, 1:] = levels[:, 1:] != levels[:, :-1]
    group = torch.cumsum(starts, dim=1) - 1
    return torch.where(inside, group, ENTROPY_BINS)


def kl_divergences(hist: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """TensorRT's calibration divergence of one ``|x|`` histogram (``[ENTROPY_BINS]``) for every candidate clip
    (rows of ``groups``, as :func:`_entropy_groups` makes them): ``KL(P || Q)`` with ``P`` the kept bins, the
    clipped mass added to the last kept bin, and ``Q`` the kept bins (without the clipped mass) quantized: each
    group's mass spread evenly over the bins where ``P`` is nonzero. A candidate where ``P > 0`` but ``Q = 0``
    (only clipped mass in its last group) diverges: ``inf`` (TensorRT smooths such zeros with an epsilon).

    Example:
        >>> import torch
        >>> groups = torch.tensor([[0, 0, 1, 2], [0, 0, 1, 1]])        # two candidates over 4 bins
        >>> hist = torch.tensor([2.0, 2.0, 1.0, 3.0], dtype=torch.float64)
        >>> [round(d, 4) for d in kl_divergences(hist, groups).tolist()]   # Q = [2, 2, 2, 2] / 8 in the second
        [0.0, 0.0654]
    """
    kept = groups < hist.shape[0]
    n = kept.sum(dim=1)
    sliced = torch.where(kept, hist[None, :], torch.zeros_like(hist)[None, :])
    clipped = hist.sum() - sliced.sum(dim=1)
    p = sliced.scatter_add(1, (n - 1)[:, None], clipped[:, None])
    nonzero = p > 0
    cols = hist.shape[0] + 1
    mass = torch.zeros(groups.shape[0], cols, dtype=hist.dtype, device=hist.device).scatter_add_(1, groups, sliced)
    count = torch.zeros_like(mass).scatter_add_(1, groups, nonzero.to(hist.dtype))
    qd = torch.where(nonzero, mass.gather(1, groups) / count.gather(1, groups).clamp(min=1), 0.0)
    p = p / p.sum(dim=1, keepdim=True)
    qd = qd / qd.sum(dim=1, keepdim=True)
    terms = torch.where(nonzero, p * torch.log(p / qd), 0.0)
    return terms.sum(dim=1)


@register_rule
class Entropy(ScaleRule):
    """TensorRT's entropy calibration for any format: a histogram of ``|x|`` in ``ENTROPY_BINS`` bins over
    ``[0, absmax]``; for every clip point ``i`` bins up (``i >= ENTROPY_MIN_BINS``) the divergence of
    :func:`kl_divergences`, the quantized histogram made through the format's own values; ``s`` maps the clip
    point of least divergence (first on ties) to the format's max."""

    name = "entropy"
    trials = ENTROPY_BINS - ENTROPY_MIN_BINS + 1  # trial quantizations of the histogram, not of the tensor

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        amax = _absmax(rows)
        out = torch.ones_like(amax)
        live = torch.nonzero(amax > 0).reshape(-1).tolist()
        if not live:
            return out
        groups = _entropy_groups(rng, q, rows.dtype, rows.device)
        for g in live:
            a = rows[g].abs()
            idx = (a / amax[g] * ENTROPY_BINS).floor().clamp(max=ENTROPY_BINS - 1).long()
            hist = torch.zeros(ENTROPY_BINS, dtype=rows.dtype, device=rows.device)
            hist.scatter_add_(0, idx, torch.ones_like(a))
            best = int(torch.argmin(kl_divergences(hist, groups)))
            out[g] = (best + ENTROPY_MIN_BINS) * amax[g] / ENTROPY_BINS / rng.max
        return out


@register_rule
class Mx(ScaleRule):
    """OCP Microscaling, torchao's FLOOR: ``X = 2^(floor(log2 absmax) - emax)``. The variants below are
    subclasses that change only :meth:`exponent`."""

    name = "mx"
    default_storage = "e8m0"
    clips = True
    static = False
    stored_exact = True
    nonfinite_is_nan = True
    fused = "mx"

    def check(self, element: Format, granularity: Granularity) -> None:
        if not isinstance(granularity, PerBlock):
            raise ValueError(f"{self} scaling shares one exponent per block: use granularity block:32, "
                             f"got {granularity}")
        if not (element.is_signed and element.max > 0):
            raise ValueError(f"{self} scaling needs a signed element format (a float, signed integer, posit, LP or "
                             f"signed codebook: the block's absmax is aimed at its ±max), got {element}")

    def exponent(self, mantissa: torch.Tensor, exp: torch.Tensor, rng: ElementRange) -> torch.Tensor:
        """The shared exponent (of X) of blocks whose absmax is ``mantissa * 2^exp`` (``torch.frexp``:
        mantissa in [0.5, 1), so ``floor(log2 absmax) = exp - 1``, exactly)."""
        return exp - 1 - rng.emax

    def scales(self, rows: torch.Tensor, rng: ElementRange, q: Quantizer | None) -> torch.Tensor:
        amax = _absmax(rows)
        nonfinite = ~torch.isfinite(amax)  # a NaN or an infinity in the block: a NaN scale (OCP)
        amax = torch.where((amax > 0) & ~nonfinite, amax, torch.full_like(amax, 2.0**-126))
        mantissa, exp = torch.frexp(amax)
        exponent = self.exponent(mantissa, exp.to(amax.dtype), rng)
        shared = torch.exp2(exponent.clamp(min=-127))  # the E8M0 scale X
        return torch.where(nonfinite | (exponent > 127), torch.full_like(shared, math.nan), shared * rng.unit)


@register_rule
class MxCeil(Mx):
    """torchao's CEIL: ``X = 2^(ceil(log2 absmax) - emax)`` (nothing clips; small elements may flush)."""

    name = "mx-ceil"
    fused = "mx-ceil"

    def exponent(self, mantissa: torch.Tensor, exp: torch.Tensor, rng: ElementRange) -> torch.Tensor:
        return exp - (mantissa == 0.5).to(exp.dtype) - rng.emax


@register_rule
class MxEven(Mx):
    """torchao's EVEN: ``X = 2^(floor(log2 r) - emax)``, ``r`` the absmax rounded to the element's fraction
    bits ``m`` (half up, which here is half to even): the exponent goes up by one when the absmax's mantissa is
    at least ``2 - 2^-(m+1)``."""

    name = "mx-even"
    fused = "mx-even"

    def check(self, element: Format, granularity: Granularity) -> None:
        super().check(element, granularity)
        if element_range(element).mbits is None:
            raise ValueError(f"{self} rounds the absmax to the element's fraction bits, which float (fp, eXmY) and "
                             f"integer elements have; got {element}")

    def exponent(self, mantissa: torch.Tensor, exp: torch.Tensor, rng: ElementRange) -> torch.Tensor:
        carry = mantissa >= 1.0 - 2.0 ** -(rng.mbits + 2)  # (frexp's mantissa is half the IEEE one)
        return exp - 1 + carry.to(exp.dtype) - rng.emax


@register_rule
class MxRceil(Mx):
    """torchao's RCEIL (cuBLAS's UE8M0 recipe): ``X = 2^ceil(log2(absmax / max))``, the smallest power of two
    that clips nothing (``pow2`` with E8M0's exponent range instead of ±24)."""

    name = "mx-rceil"
    fused = "mx-rceil"

    def exponent(self, mantissa: torch.Tensor, exp: torch.Tensor, rng: ElementRange) -> torch.Tensor:
        top_mantissa, top_exp = math.frexp(rng.max * rng.unit)  # absmax <= max * 2^k, in integers
        return exp - top_exp + (mantissa > top_mantissa).to(exp.dtype)


def element_range(f: Format) -> ElementRange:
    """Unsigned integers are used with zero point 2^(n-1) (the lab's UINT8 activations: zero point 128).
    Signed integers are fixed point for MX, ``k * 2^-(n-2)``: n-2 fraction bits below a top binade [1, 2)."""
    from dtypelab.formats import Integer

    if isinstance(f, Integer):
        unit = 2.0 ** -(f.n - 2)
        if not f.signed:
            zp = float(1 << (f.n - 1))
            return ElementRange(f.max - zp, zp, unit)
        return ElementRange(f.max, unit=unit, mbits=f.n - 2)
    return ElementRange(f.max, mbits=getattr(f, "fraction_bits", None))  # floats have fraction bits
