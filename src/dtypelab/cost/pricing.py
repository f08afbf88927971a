"""How a multiply-accumulate of two operand formats is carried out, and what each of its operations costs.

Every format maps to an *operand* (:data:`OPERANDS`, one entry per format class): its arithmetic kind and
width. A pair of operands maps to a *datapath* (:data:`DATAPATHS`, one entry per pair of kinds; pairs of
different kinds meet in floating point): the multiply, the accumulate add, any per-product conversion, and
how outputs are rescaled. The rules, and why, are in ``docs/cost.md``; a user table's ``formats`` entries
override the derived multiply, accumulate and lookup prices.

Example:
    >>> from dtypelab.cost.table import LAB_TABLE
    >>> from dtypelab.formats import fmt
    >>> dp = datapath(LAB_TABLE, fmt("int8"), fmt("uint8"))
    >>> dp.mul, dp.acc
    (Op(name='int8 mul', pj=0.2), Op(name='int32 add', pj=0.1))
    >>> datapath(LAB_TABLE, None, None).mul
    Op(name='fp32 mul', pj=3.7)
    >>> datapath(LAB_TABLE, fmt("lp(8,2,2,0)"), fmt("lp(8,2,2,0)")).mul.name   # a product of logs is an add
    'int8 add (log-domain mul)'
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from dtypelab.cost.table import EnergyTable
from dtypelab.formats import FloatFormat, Format, Integer, LogPosit, Posit
from dtypelab.formats.codebook import IndexedFormat

FP32 = "fp32"


@dataclass(frozen=True)
class Operand:
    """How a format enters arithmetic: ``kind`` (int, fp, posit, lp, codebook), width, and its spec."""

    kind: str
    bits: int
    spec: str


class Op:
    """One priced operation: a name for the report and its energy in pJ (``pj`` may be priced on first use, so
    that a table needs only the entries a model uses)."""

    __slots__ = ("name", "_pj", "_price")

    def __init__(self, name: str, pj: float | None = None, price: Callable[[], float] | None = None) -> None:
        if (pj is None) == (price is None):
            raise TypeError("Op needs exactly one of pj or price")
        self.name, self._pj, self._price = name, pj, price

    @property
    def pj(self) -> float:
        if self._pj is None:
            self._pj = self._price()
        return self._pj

    def __repr__(self) -> str:
        return f"Op(name={self.name!r}, pj={self.pj!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Op) and (self.name, self.pj) == (other.name, other.pj)

    def __hash__(self) -> int:
        return hash(self.name)


def priced(t: EnergyTable, name: str, op: str, kind: str, bits: float) -> Op:
    return Op(name, price=lambda: t.price(op, kind, bits))


@dataclass(frozen=True)
class Datapath:
    """The operations of ``sum(a * b)`` for one pair of operand formats.

    ``mul`` and ``acc`` are per product and per accumulate; ``convert`` runs once per product before it is
    accumulated (log -> linear for LP); ``lookup_a``/``lookup_b`` dequantize one element of a codebook
    operand; ``narrow_add`` is an add at the operands' width (the lab prices its bias add so);
    ``integer`` says outputs are requantized in fixed point (multiplier + shift) when scales are not powers of
    two; ``zp_add_a``/``zp_add_b`` subtract one zero point.
    """

    label: str
    mul: Op
    acc: Op
    narrow_add: Op
    integer: bool
    convert: tuple[Op, ...] = ()
    lookup_a: Op | None = None
    lookup_b: Op | None = None
    zp_add_a: Op | None = None
    zp_add_b: Op | None = None


# ---- operands: one rule per format class --------------------------------------------------------------------

OPERANDS: dict[type, Callable[[Format], Operand]] = {
    Integer: lambda f: Operand("int", f.bits, str(f)),
    FloatFormat: lambda f: Operand("fp", f.bits, str(f)),
    Posit: lambda f: Operand("posit", f.bits, str(f)),
    LogPosit: lambda f: Operand("lp", f.bits, str(f)),
    IndexedFormat: lambda f: Operand("codebook", f.bits, str(f)),
}


def operand(f: Format | None) -> Operand:
    """The operand of a format; ``None`` (unquantized) is FP32."""
    if f is None:
        return Operand("fp", 32, FP32)
    for cls in type(f).__mro__:
        if cls in OPERANDS:
            return OPERANDS[cls](f)
    raise ValueError(f"no energy rule for format {f} ({type(f).__name__}); known format classes: "
                     f"{', '.join(c.__name__ for c in OPERANDS)}; register one in dtypelab.cost.pricing.OPERANDS")


# ---- datapaths: one rule per pair of kinds ------------------------------------------------------------------

def _int_add(t: EnergyTable, bits: int, what: str = "") -> Op:
    return priced(t, f"int{bits} add{what}", "add", "int", bits)


def _fp(t: EnergyTable, op: str, bits: int) -> Op:
    return priced(t, f"fp{bits} {op}", op, "fp", bits)


def _int_int(t: EnergyTable, a: Operand, b: Operand) -> Datapath:
    width = math.sqrt(a.bits * b.bits)  # an a x b array multiplier switches ~ a*b cells: price at sqrt(ab)
    name = f"int{a.bits} mul" if a.bits == b.bits else f"int{a.bits}×int{b.bits} mul"
    acc = 32 if a.bits + b.bits <= 24 else 64
    return Datapath(f"{a.spec}×{b.spec}", priced(t, name, "mul", "int", width), _int_add(t, acc),
                    _int_add(t, max(a.bits, b.bits)), integer=True)


def _fp_fp(t: EnergyTable, a: Operand, b: Operand) -> Datapath:
    width = max(a.bits, b.bits)
    return Datapath(f"{a.spec}×{b.spec}", _fp(t, "mul", width), _fp(t, "add", max(32, width)),
                    _fp(t, "add", width), integer=False)


def _posit_posit(t: EnergyTable, a: Operand, b: Operand) -> Datapath:
    # A posit multiplier is a float multiplier behind a variable-length decoder: priced as an fp multiply of
    # the word width. Products accumulate exactly in the quire, a fixed-point register of 16n bits (Posit
    # Standard 2022), priced as an integer add of that width.
    width = max(a.bits, b.bits)
    mul = priced(t, f"posit{width} mul (as fp{width} mul)", "mul", "fp", width)
    return Datapath(f"{a.spec}×{b.spec}", mul, _int_add(t, 16 * width, " (quire)"), _fp(t, "add", width),
                    integer=False)


def _lp_lp(t: EnergyTable, a: Operand, b: Operand) -> Datapath:
    # LP values are signed powers of two: a product is an add of the two log words (sign by XOR, free).
    # Each product is brought back to linear (its log fraction through a 2^F-entry table, then a shift to its
    # exponent) and accumulated in a 32-bit fixed-point register.
    width = max(a.bits, b.bits)
    convert = (Op("lookup (log fraction -> linear)", price=lambda: _lookup_price(t, width, None)),
               Op("shift", t.shift))
    return Datapath(f"{a.spec}×{b.spec}", _int_add(t, width, " (log-domain mul)"), _int_add(t, 32),
                    _int_add(t, width), integer=True, convert=convert)


def _mixed(t: EnergyTable, a: Operand, b: Operand) -> Datapath:
    # Operands of different kinds meet in floating point: fp16 where both fit in 16 bits, else fp32;
    # the cast is free (as in the lab); products accumulate in fp32.
    width = 16 if max(a.bits, b.bits) <= 16 and FP32 not in (a.spec, b.spec) else 32
    return Datapath(f"{a.spec}×{b.spec} (in fp{width})", _fp(t, "mul", width), _fp(t, "add", 32),
                    _fp(t, "add", width), integer=False)


DATAPATHS: dict[tuple[str, str], Callable[[EnergyTable, Operand, Operand], Datapath]] = {
    ("int", "int"): _int_int,
    ("fp", "fp"): _fp_fp,
    ("posit", "posit"): _posit_posit,
    ("lp", "lp"): _lp_lp,
}


def _lookup_price(t: EnergyTable, index_bits: int, spec: str | None) -> float:
    """One read of a 2^b-entry value table: the user's price, else the table's, else an int add of b bits."""
    own = t.override("lookup", spec) if spec else None
    if own is not None:
        return own
    return t.lookup if t.lookup is not None else t.price("add", "int", index_bits)


def datapath(t: EnergyTable, fa: Format | None, fb: Format | None) -> Datapath:
    """The datapath of ``sum(a * b)`` with ``a`` in ``fa`` and ``b`` in ``fb`` (``None`` = FP32)."""
    a, b = operand(fa), operand(fb)
    look_a = look_b = None
    # Codebook operands (NF4, DT, codebook(...)) are dequantized by a table lookup into fp16 and multiplied so.
    if a.kind == "codebook":
        look_a = Op(f"{a.spec} lookup", price=lambda n=a.bits, s=a.spec: _lookup_price(t, n, s))
        a = Operand("fp", 16, a.spec)
    if b.kind == "codebook":
        look_b = Op(f"{b.spec} lookup", price=lambda n=b.bits, s=b.spec: _lookup_price(t, n, s))
        b = Operand("fp", 16, b.spec)
    key = tuple(sorted((a.kind, b.kind)))
    rule = DATAPATHS.get(key, _mixed) if a.kind == b.kind else _mixed
    dp = rule(t, a, b)
    specs = (operand(fa).spec, operand(fb).spec)
    mul = t.override("mul", *specs)
    acc = t.override("acc", *specs)
    return replace(
        dp,
        mul=dp.mul if mul is None else Op(f"{dp.label} mul (table)", mul),
        acc=dp.acc if acc is None else Op(f"{dp.label} acc (table)", acc),
        lookup_a=look_a, lookup_b=look_b,
        zp_add_a=_zp_add(t, fa), zp_add_b=_zp_add(t, fb),
    )


def _zp_add(t: EnergyTable, f: Format | None) -> Op | None:
    from dtypelab.schemes.scales import element_range

    if f is None or not element_range(f).zero_point:
        return None
    return _int_add(t, f.bits, " (zero point)")


def rescale_ops(t: EnergyTable, dp: Datapath, pow2: bool) -> tuple[Op, ...]:
    """Operations that bring one accumulated output back to scale.

    Power-of-two scales fold into one shift (the lab's static pow2 scheme); other scales need a fixed-point
    multiplier and a shift on an integer datapath (gemmlowp style), or an fp32 multiply on a float one.
    """
    if pow2:
        return (Op("shift", t.shift),)
    if dp.integer:
        return (priced(t, "int32 mul (requantize)", "mul", "int", 32), Op("shift", t.shift))
    return (_fp(t, "mul", 32),)


def compute_datapath(t: EnergyTable, dp: Datapath, compute: object, operand_bits: int) -> tuple[Datapath, Op | None]:
    """The datapath with its accumulate add priced from a layer's simulated ``compute``
    (:class:`dtypelab.arith.Compute`), and the promotion add of the align:k model (one per chunk), if any.

    A format accumulator adds at its width (fp, posit as fp, int); the quire is an integer add of 16 x the
    operand width (Posit Standard 2022); ``align:k`` an integer add of k + 1 bits per product plus one add in the
    promotion format per chunk; ``fixed(W,F)`` / ``intW`` an integer add of W bits. A rounded product format
    prices the multiply at that format's width.
    """
    from dtypelab.arith.compute import Align, Fixed, FormatAcc, Quire

    acc, promote = compute.accumulator, None
    if isinstance(acc, FormatAcc):
        kind = "int" if acc.fmt.kind == "int" else "fp"
        op = priced(t, f"{acc.fmt} add (accumulator)", "add", kind, acc.fmt.bits)
    elif isinstance(acc, Quire):
        op = _int_add(t, 16 * operand_bits, " (quire)")
    elif isinstance(acc, Align):
        op = _int_add(t, acc.k + 1, f" ({acc})")
        promote = priced(t, f"{compute.promote} add (promotion)", "add", "fp", compute.promote.bits)
    elif isinstance(acc, Fixed):
        op = _int_add(t, acc.width, f" ({acc})")
    else:  # pragma: no cover - every accumulator class is listed above
        raise ValueError(f"no energy rule for accumulator {acc}")
    mul = dp.mul
    if not compute.product.exact:
        mul = priced(t, f"{compute.product} mul (product)", "mul", "fp", compute.product.bits)
    return replace(dp, acc=op, mul=mul), promote
