"""One parametric float family: IEEE ``fp(e,m)``, the OCP formats, fnuz, E8M0, IEEE P3109 ``binaryKpP`` and the
unsigned minifloats ``ueXmY`` are instances, not code.

A :class:`FloatFormat` is a width, a precision (fraction bits + 1), a bias and five properties in the spirit of
gfloat's ``FormatInfo``: signed or not, finite or extended domain (±inf), a negative zero or, in its place, a
NaN (fnuz), how many NaN codes sit at the top of each sign's range, and subnormals or not (without them the
lowest exponent field is an ordinary binade, so there is no zero: E8M0). :meth:`FloatFormat.code_values` is the
one definition of what each code means; ``nan_code``, ``inf_code`` and the names derive from the parameters.

Quantizing rounds to nearest, ties to the even code, saturates finite overflow at ±max; NaN stays NaN; ±inf
stays ±inf in an extended format, else saturates. Inputs below the lowest value of a format without zero or
sign (zero, negatives for E8M0) saturate to that lowest value.

Example:
    >>> import torch, dtypelab as dl
    >>> dl.fmt("e4m3").quantize(torch.tensor([0.1, 1000.0, -3.3])).tolist()
    [0.1015625, 448.0, -3.25]
    >>> str(dl.fmt("fp(5,10)")), dl.fmt("e5m2").max, dl.fmt("e5m2").inf_code
    ('fp16', 57344.0, 124)
    >>> e8m0 = dl.fmt("e8m0")
    >>> e8m0.min_positive == 2.0**-127, e8m0.max == 2.0**127, e8m0.nan_code
    (True, True, 255)
    >>> str(dl.fmt("binary8p3")), str(dl.fmt("float8_e4m3")), dl.fmt("ue4m3").max
    ('binary8p3se', 'fp(4,3)', 448.0)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum

import numpy as np

from dtypelab.formats.base import TABLE_BITS, Format
from dtypelab.formats.registry import int_args, register_alias, register_family, register_pattern


class Domain(str, Enum):
    """FINITE: no infinities (±inf inputs saturate). EXTENDED: ±inf just below the top NaN codes."""

    FINITE = "finite"
    EXTENDED = "extended"


@dataclass(frozen=True, repr=False)
class FloatFormat(Format):
    """A binary float: ``width`` bits, ``precision`` = fraction bits + 1, exponent ``bias``.

    ``signed``: a sign bit on top (negatives are the sign-magnitude mirror). ``domain``: whether ±inf exist.
    ``negative_zero``: signed only; False puts a NaN at the negative-zero pattern 10…0 (fnuz, P3109).
    ``high_nans``: NaN codes at the top of each sign's range (IEEE: ``2^(precision-1) - 1``, OCP E4M3: 1).
    ``subnormals``: False makes exponent field 0 an ordinary binade (no zero; E8M0).
    ``precision`` may be the whole width of a signed format with subnormals: no exponent field, every value is
    a subnormal (fixed point; P3109 with P = K).

    Example:
        >>> f = FloatFormat(8, 4, 8, signed=True, domain=Domain.FINITE, negative_zero=False, high_nans=0,
        ...                 subnormals=True)
        >>> str(f), f.max, f.nan_code
        ('e4m3fnuz', 240.0, 128)
    """

    width: int
    precision: int
    bias: int
    signed: bool = True
    domain: Domain = Domain.EXTENDED
    negative_zero: bool = True
    high_nans: int = 0
    subnormals: bool = True

    def __post_init__(self) -> None:
        for name in ("width", "precision", "bias", "high_nans"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"FloatFormat: {name} must be an integer, got {value!r}")
        for name in ("signed", "negative_zero", "subnormals"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"FloatFormat: {name} must be a bool, got {getattr(self, name)!r}")
        try:
            object.__setattr__(self, "domain", Domain(self.domain))
        except ValueError:
            raise ValueError(f"FloatFormat: domain must be one of {[d.value for d in Domain]}, "
                             f"got {self.domain!r}") from None
        if not 2 <= self.width <= TABLE_BITS:
            raise ValueError(f"FloatFormat: width must be in 2..{TABLE_BITS}, got {self.width}")
        if not 1 <= self.precision <= self.width:
            raise ValueError(f"FloatFormat: precision must be in 1..{self.width - self.signed} (width - sign bit)"
                             f"{', or the width (no exponent field)' if self.signed else ''}, got {self.precision}")
        if self.exponent_bits == 0 and not self.subnormals:
            raise ValueError(f"FloatFormat: precision {self.precision} = width leaves no exponent field, which needs "
                             "subnormals=True (every value is then subnormal: fixed point)")
        if not self.signed and self.negative_zero:
            raise ValueError("FloatFormat: an unsigned format has no negative zero (negative_zero=False)")
        most = self.magnitudes - 1 - (self.domain == Domain.EXTENDED)  # leave inf and one value
        if not 0 <= self.high_nans <= most:
            raise ValueError(f"FloatFormat: high_nans must be in 0..{most} for this width and domain, "
                             f"got {self.high_nans}")
        top = (1 << self.exponent_bits) - 1 - self.bias
        low = (1 if self.subnormals else 0) - self.bias - (self.fraction_bits if self.subnormals else 0)
        if top > 1023 or low < -1074:
            raise ValueError(f"FloatFormat: bias {self.bias} puts values outside float64 (binades 2^{low} .. "
                             f"2^{top}; float64 holds 2^-1074 .. 2^1023)")

    @property
    def bits(self) -> int:
        return self.width

    @property
    def fraction_bits(self) -> int:
        return self.precision - 1

    @property
    def exponent_bits(self) -> int:
        return self.width - self.signed - self.fraction_bits

    @property
    def magnitudes(self) -> int:
        """Codes of one sign: 2^(width-1) when signed, 2^width when not."""
        return 1 << (self.width - self.signed)

    @property
    def inf_code(self) -> int | None:
        return self.magnitudes - 1 - self.high_nans if self.domain == Domain.EXTENDED else None

    @property
    def nan_code(self) -> int | None:
        """The quiet NaN: the first high NaN with its top fraction bit set (IEEE), else the first high NaN;
        without high NaNs the negative-zero pattern when it is a NaN."""
        if self.high_nans:
            nans = range(self.magnitudes - self.high_nans, self.magnitudes)
            quiet = [c for c in nans if self.fraction_bits and c >> (self.fraction_bits - 1) & 1]
            return quiet[0] if quiet else nans[0]
        return self.magnitudes if self.signed and not self.negative_zero else None

    @property
    def above_max(self) -> float:
        """max + the spacing of max's binade (for precision 1, 2 * max): the first value of the grid past max."""
        lowest = 1 - self.bias if self.subnormals else -self.bias
        top = max(math.floor(math.log2(self.max)), lowest) if self.max > 0 else lowest
        return self.max + 2.0 ** (top - self.fraction_bits)

    @property
    def min_normal(self) -> float | None:
        """2^(1 - bias) where the format has subnormals below it (none: precision 1, or no subnormals)."""
        return 2.0 ** (1 - self.bias) if self.subnormals and self.fraction_bits and self.exponent_bits else None

    def __str__(self) -> str:
        """The first name that fits: a named instance, ``fp(e,m)``, ``binaryKpP..``, ``ueXmY``, else ``float(...)``."""
        for name in _NAMERS:
            if spec := name(self):
                return spec
        return "float(" + ",".join(f"{f.name}={_spec_value(getattr(self, f.name))}" for f in fields(self)) + ")"

    def code_values(self) -> np.ndarray:
        codes = np.arange(1 << self.width, dtype=np.int64)
        mag_code = codes & (self.magnitudes - 1)
        exp = mag_code >> self.fraction_bits
        frac = (mag_code & ((1 << self.fraction_bits) - 1)).astype(np.float64) / (1 << self.fraction_bits)
        sub = (exp == 0) & self.subnormals
        mag = np.ldexp(np.where(sub, frac, 1.0 + frac), (np.where(sub, 1, exp) - self.bias).astype(np.int32))
        mag = np.where(mag_code >= self.magnitudes - self.high_nans, np.nan, mag)
        if self.inf_code is not None:
            mag = np.where(mag_code == self.inf_code, np.inf, mag)
        if not self.signed:
            return mag
        negative = codes >= self.magnitudes
        values = np.where(negative, -mag, mag)
        if not self.negative_zero:
            values[self.magnitudes] = np.nan
        return values


def ieee(e: int, m: int) -> FloatFormat:
    """IEEE-754-like ``fp(e,m)``: bias 2^(e-1)-1, subnormals, top exponent for ±inf and NaN.

    Example:
        >>> ieee(5, 2) == FloatFormat(8, 3, 15, high_nans=3), ieee(5, 2).inf_code, ieee(5, 2).nan_code
        (True, 124, 126)
    """
    if not (isinstance(e, int) and 2 <= e <= 8 and isinstance(m, int) and m >= 1 and 1 + e + m <= 16):
        raise ValueError(f"fp(e,m): need integers 2 <= e <= 8, m >= 1 and 1+e+m <= 16 bits, got e={e!r}, m={m!r}")
    return FloatFormat(1 + e + m, m + 1, (1 << (e - 1)) - 1, high_nans=(1 << m) - 1)


class Signedness(str, Enum):
    """P3109's signedness: SIGNED (a sign bit, NaN at 10…0) or UNSIGNED (no sign bit, NaN at the top code)."""

    SIGNED = "s"
    UNSIGNED = "u"


P3109_SUFFIX = {(Signedness.SIGNED, Domain.EXTENDED): "se", (Signedness.SIGNED, Domain.FINITE): "sf",
                (Signedness.UNSIGNED, Domain.EXTENDED): "ue", (Signedness.UNSIGNED, Domain.FINITE): "uf"}


def p3109(k: int, p: int, signedness: Signedness | str = Signedness.SIGNED,
          domain: Domain | str = Domain.EXTENDED) -> FloatFormat:
    """IEEE P3109 ``binaryKpP`` (interim report): K bits, precision P = 1..K, no negative zero, subnormals.

    Signed: bias ``floor(2^(K-P-1))`` (0 when P = K: no exponent field), NaN at ``10…0``. Unsigned: bias
    ``2^(K-P)``, one NaN at the top code. Extended domain: ±inf at the code just below (signed: the top code
    of each sign). Formats whose exponent range leaves float64 (K - P > 11 signed, > 10 unsigned) are refused.

    Example:
        >>> f = p3109(8, 3)
        >>> str(f), f.max, f.min_positive == 2.0**-17, f.nan_code, f.inf_code
        ('binary8p3se', 49152.0, True, 128, 127)
        >>> str(p3109(8, 4, "s", "finite")), p3109(8, 8, "s", "finite").max  # P = K: fixed point, bias 0
        ('e4m3fnuz', 1.984375)
    """
    if not (isinstance(k, int) and isinstance(p, int)) or isinstance(k, bool) or isinstance(p, bool):
        raise TypeError(f"binaryKpP: K and P must be integers, got K={k!r}, P={p!r}")
    if not 2 <= k <= TABLE_BITS:
        raise ValueError(f"binaryKpP: K (width) must be in 2..{TABLE_BITS}, got binary{k}p{p}")
    if not 1 <= p <= k:
        raise ValueError(f"binaryKpP: P (precision) must be in 1..K = 1..{k}, got binary{k}p{p}")
    try:
        signedness, domain = Signedness(signedness), Domain(domain)
    except ValueError:
        raise ValueError(f"binaryKpP: signedness must be one of {[s.value for s in Signedness]} and domain one of "
                         f"{[d.value for d in Domain]}, got {signedness!r}, {domain!r}") from None
    signed = signedness == Signedness.SIGNED
    widest = 11 if signed else 10
    if k - p > widest:
        raise ValueError(f"binary{k}p{p}{P3109_SUFFIX[signedness, domain]}: K - P must be at most {widest} for "
                         f"{'signed' if signed else 'unsigned'} formats (P >= {k - widest}): wider exponent ranges "
                         "leave float64")
    bias = (1 << (k - p - 1) if k > p else 0) if signed else 1 << (k - p)
    return FloatFormat(k, p, bias, signed=signed, domain=domain, negative_zero=False, high_nans=0 if signed else 1,
                       subnormals=True)


def unsigned_float(e: int, m: int) -> FloatFormat:
    """``ueXmY``: X exponent and Y fraction bits, no sign, bias ``2^(X-1)-1`` (IEEE's), finite, subnormals,
    one NaN at the top code (all ones). NVFP4's UE4M3 block scale is ``ue4m3`` (7 bits).

    Example:
        >>> f = unsigned_float(4, 3)
        >>> str(f), f.bits, f.max, f.min_positive == 2.0**-9, f.nan_code
        ('ue4m3', 7, 448.0, True, 127)
    """
    if not (isinstance(e, int) and isinstance(m, int) and 1 <= e <= 10 and m >= 0 and 2 <= e + m <= TABLE_BITS):
        raise ValueError(f"ueXmY: need integers 1 <= X <= 10, Y >= 0 and X+Y in 2..{TABLE_BITS} bits, "
                         f"got ue{e}m{m}")
    return FloatFormat(e + m, m + 1, (1 << (e - 1)) - 1, signed=False, domain=Domain.FINITE, negative_zero=False,
                       high_nans=1, subnormals=True)


def _ocp(e: int, m: int, high_nans: int) -> FloatFormat:
    return FloatFormat(1 + e + m, m + 1, (1 << (e - 1)) - 1, domain=Domain.FINITE, high_nans=high_nans)


def _fnuz(e: int, m: int) -> FloatFormat:
    return FloatFormat(1 + e + m, m + 1, 1 << (e - 1), domain=Domain.FINITE, negative_zero=False)


E8M0 = FloatFormat(8, 1, 127, signed=False, domain=Domain.FINITE, negative_zero=False, high_nans=1,
                   subnormals=False)

#: Canonical names of the named instances (``str`` gives them; ``fmt`` reads them).
NAMES: dict[FloatFormat, str] = {
    ieee(5, 2): "e5m2", ieee(8, 7): "bf16", ieee(5, 10): "fp16",
    _ocp(4, 3, 1): "e4m3", _ocp(3, 2, 0): "e3m2", _ocp(2, 3, 0): "e2m3", _ocp(2, 1, 0): "e2m1",
    _fnuz(4, 3): "e4m3fnuz", _fnuz(5, 2): "e5m2fnuz", E8M0: "e8m0",
}


def _spec_value(v: object) -> str:
    return v.value if isinstance(v, Domain) else str(int(v)) if isinstance(v, bool) else str(v)


def _named(f: FloatFormat) -> str | None:
    return NAMES.get(f)


def _is(f: FloatFormat, build: Callable[..., FloatFormat], *args: object) -> bool:
    """Whether ``build(*args)`` is a valid format equal to ``f``."""
    try:
        return f == build(*args)
    except ValueError:
        return False


def _ieee_name(f: FloatFormat) -> str | None:
    e, m = f.exponent_bits, f.fraction_bits
    return f"fp({e},{m})" if f.signed and _is(f, ieee, e, m) else None


def _p3109_name(f: FloatFormat) -> str | None:
    signedness = Signedness.SIGNED if f.signed else Signedness.UNSIGNED
    same = _is(f, p3109, f.width, f.precision, signedness, f.domain)
    return f"binary{f.width}p{f.precision}{P3109_SUFFIX[signedness, f.domain]}" if same else None


def _unsigned_name(f: FloatFormat) -> str | None:
    e, m = f.exponent_bits, f.fraction_bits
    return f"ue{e}m{m}" if not f.signed and _is(f, unsigned_float, e, m) else None


#: How ``str`` names a FloatFormat: the first of these that gives a name (else the generic ``float(...)``).
_NAMERS = (_named, _ieee_name, _p3109_name, _unsigned_name)


def _parse_p3109(groups: list[str]) -> FloatFormat:
    """``binaryKpP`` (signed, extended: P3109's default), ``binaryKpP{s,u}{e,f}``, gfloat's ``p3109_kKpP{s,u}{e,f}``."""
    k, p = int_args(groups[:2], 2, "binaryKpP")
    kind = groups[2] or "se"
    return p3109(k, p, kind[0], {"e": Domain.EXTENDED, "f": Domain.FINITE}[kind[1]])


def _parse_float(args: list[str]) -> FloatFormat:
    """``float(width=8,precision=4,bias=8,...)``: every field by name (bools as 0/1, domain finite/extended)."""
    names = [f.name for f in fields(FloatFormat)]
    kwargs: dict[str, object] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        if not eq or key not in names or key in kwargs:
            raise ValueError(f"float(...) takes key=value arguments, each once, keys {names}; got {arg!r}")
        if key == "domain":
            kwargs[key] = value
            continue
        (number,) = int_args([value], 1, f"float: {key}")
        kwargs[key] = bool(number) if key in ("signed", "negative_zero", "subnormals") else number
    missing = [n for n in names[:3] if n not in kwargs]
    if missing:
        raise ValueError(f"float(...) needs {missing}; keys: {names}")
    return FloatFormat(**kwargs)  # type: ignore[arg-type]


def _exmy(args: list[str]) -> FloatFormat:
    """``eXmY``: the named format of that shape (e4m3 is OCP's), else IEEE ``fp(X,Y)``."""
    e, m = int_args(args, 2, "eXmY")
    return _BY_NAME.get(f"e{e}m{m}") or ieee(e, m)


_BY_NAME = {name: f for f, name in NAMES.items()}
register_family("fp", lambda a: ieee(*int_args(a, 2, "fp")), forms=("fp(e,m)",))
register_pattern(r"e(\d+)m(\d+)", _exmy, "eXmY")
register_family("float", _parse_float, forms=("float(width=,precision=,bias=[,signed=,domain=,negative_zero=,"
                                              "high_nans=,subnormals=])",))
register_pattern(r"binary(\d+)p(\d+)([su][ef])?", _parse_p3109, "binaryKpP[s|u][e|f]")
register_pattern(r"p3109_k(\d+)p(\d+)([su][ef])", _parse_p3109, "p3109_kKpP{s|u}{e|f}")
register_pattern(r"ue(\d+)m(\d+)", lambda a: unsigned_float(*int_args(a, 2, "ueXmY")), "ueXmY")
for _format, _name in NAMES.items():
    register_alias(_name, _format)
#: Other names: ml_dtypes' type names (its ``float8_e4m3`` is IEEE-like fp(4,3); OCP E4M3 is ``float8_e4m3fn``).
ALIASES = {
    "bfloat16": "bf16", "float16": "fp16", "e4m3fn": "e4m3",
    "float8_e4m3fn": "e4m3", "float8_e4m3": "fp(4,3)", "float8_e5m2": "e5m2", "float8_e4m3fnuz": "e4m3fnuz",
    "float8_e5m2fnuz": "e5m2fnuz", "float8_e8m0fnu": "e8m0", "float8_e3m4": "fp(3,4)", "float6_e3m2fn": "e3m2",
    "float6_e2m3fn": "e2m3", "float4_e2m1fn": "e2m1",
}
for _alias, _spec in ALIASES.items():
    register_alias(_alias, _spec)

__all__ = ["FloatFormat", "Domain", "Signedness", "ieee", "p3109", "unsigned_float", "E8M0", "NAMES", "ALIASES"]
