"""Energy tables: what one arithmetic operation costs, in picojoules, and how to read a user's table from YAML.

The default table (:data:`LAB_TABLE`) is the lab's (seed 004), which follows Horowitz, "Computing's energy
problem (and what we can do about it)", ISSCC 2014, 45 nm: integer add 0.03 / 0.05 / 0.1 pJ at 8 / 16 / 32
bits, integer multiply 0.2 / 3.1 pJ at 8 / 32 bits, float add 0.4 / 0.9 pJ and float multiply 1.1 / 3.7 pJ
at 16 / 32 bits, and a bit shift 0.01 pJ. Widths the table does not list are priced by
:meth:`EnergyTable.price` from the entries it does list (see ``docs/cost.md``).

A user table is YAML (or a dict) with the same fields; every field but ``mul``, ``add`` and ``shift`` is
optional, and ``formats`` overrides the derived price of a format's multiply, accumulate or lookup::

    name: my-7nm
    mul: {int8: 0.07, int32: 1.0, fp16: 0.3, fp32: 1.2}
    add: {int8: 0.01, int32: 0.03, fp16: 0.12, fp32: 0.3}
    shift: 0.004
    formats:
      "posit(8,1)": {mul: 0.15, acc: 0.05}      # posit(8,1) x posit(8,1)
      "int4*uint8": {mul: 0.03}                 # a pair, in either order
      nf4: {lookup: 0.002}

Example:
    >>> LAB_TABLE.price("mul", "int", 8), LAB_TABLE.price("add", "fp", 32)
    (0.2, 0.9)
    >>> round(LAB_TABLE.price("add", "int", 64), 6)     # linear in width beyond the last entry
    0.2
    >>> load_table({"mul": {"int8": 1}, "add": {"int8": 1}, "shift": 0}).name
    Traceback (most recent call last):
    ...
    ValueError: energy table: shift: must be a finite number > 0 (pJ), got 0
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

KEY = re.compile(r"(u?int|fp)(\d+)")
KEY_FORMS = "intN, uintN (same price as intN) or fpN, with N the width in bits, e.g. int8, fp32"
OPS = ("mul", "add")
# How the energy of an operation grows with width where the table has one entry of a kind only:
# adders are linear in width, array multipliers quadratic (Horowitz: int mul 8 -> 32 bits is x15.5 ~ 4^2).
DEFAULT_EXPONENT = {"add": 1.0, "mul": 2.0}


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{where}: must be a finite number > 0 (pJ), got {value!r}")
    return float(value)


class FormatCost(BaseModel):
    """Overrides for one format (or pair of formats): pJ per multiply, per accumulate add, per lookup."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mul: float | None = None
    acc: float | None = None
    lookup: float | None = None

    @field_validator("mul", "acc", "lookup", mode="before")
    @classmethod
    def _check(cls, v: Any, info: Any) -> float | None:
        return None if v is None else _positive(v, info.field_name)


class EnergyTable(BaseModel):
    """pJ per operation. ``mul``/``add`` are keyed ``intN``/``fpN``; ``formats`` overrides derived prices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "custom"
    source: str = ""
    mul: dict[str, float]
    add: dict[str, float]
    shift: float
    lookup: float | None = None
    formats: dict[str, FormatCost] = {}

    @field_validator("mul", "add", mode="before")
    @classmethod
    def _entries(cls, v: Any, info: Any) -> dict[str, float]:
        if not isinstance(v, Mapping) or not v:
            raise ValueError(f"{info.field_name}: needs a mapping of at least one entry ({KEY_FORMS}) to pJ, "
                             f"got {v!r}")
        out: dict[str, float] = {}
        for key, price in v.items():
            m = KEY.fullmatch(str(key).strip().lower())
            if not m or int(m[2]) < 1:
                raise ValueError(f"{info.field_name}: unknown key {key!r}; valid keys: {KEY_FORMS}")
            kind = "fp" if m[1] == "fp" else "int"
            out[f"{kind}{int(m[2])}"] = _positive(price, f"{info.field_name}.{key}")
        return out

    @field_validator("shift", mode="before")
    @classmethod
    def _shift(cls, v: Any) -> float:
        return _positive(v, "shift")

    @field_validator("lookup", mode="before")
    @classmethod
    def _lookup(cls, v: Any) -> float | None:
        return None if v is None else _positive(v, "lookup")

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, v: Any) -> dict[str, Any]:
        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise ValueError(f"formats: needs a mapping of format spec (or 'A*B') to {{mul, acc, lookup}}, got {v!r}")
        from dtypelab.formats import fmt

        out = {}
        for key, cost in v.items():
            try:
                specs = [str(fmt(part)) for part in str(key).split("*")]
            except ValueError as err:
                raise ValueError(f"formats: bad key {key!r}: {err}") from None
            if len(specs) > 2:
                raise ValueError(f"formats: key {key!r} names more than two formats; use 'A' or 'A*B'")
            out[pair_key(*specs)] = cost
        return out

    # ---- prices ---------------------------------------------------------------------------------------------

    def price(self, op: str, kind: str, bits: float) -> float:
        """pJ of one ``op`` ("mul" or "add") of ``kind`` ("int" or "fp") at ``bits`` width.

        An entry of the table is used as is; other widths are interpolated log-log between the two nearest
        entries of the same op and kind (extrapolated along the nearest segment); with one entry only, the
        price scales as width^1 for adds and width^2 for multiplies.
        """
        if op not in OPS:
            raise ValueError(f"unknown operation {op!r}; valid: {', '.join(OPS)}")
        if kind not in ("int", "fp"):
            raise ValueError(f"unknown arithmetic kind {kind!r}; valid: int, fp")
        entries = getattr(self, op)
        points = sorted((int(k[len(kind):]), p) for k, p in entries.items() if k.startswith(kind))
        if not points:
            other = "fp" if kind == "int" else "int"
            raise ValueError(f"energy table {self.name!r} has no {kind} {op} entry to price {kind}{bits:g} "
                             f"(it has {', '.join(entries)}); add e.g. {op}: {{{kind}32: ...}} or derive from "
                             f"{other} entries yourself")
        exact = dict(points)
        if bits in exact:
            return exact[bits]
        if len(points) == 1:
            (w, p), = points
            return p * (bits / w) ** DEFAULT_EXPONENT[op]
        lo, hi = points[0], points[1]
        for a, b in zip(points, points[1:], strict=False):
            lo, hi = a, b
            if bits < b[0]:
                break
        slope = math.log(hi[1] / lo[1]) / math.log(hi[0] / lo[0])
        return lo[1] * (bits / lo[0]) ** slope

    def override(self, field: str, *specs: str) -> float | None:
        """The user's price for ``field`` (mul, acc, lookup) of a format or pair of formats, if any."""
        cost = self.formats.get(pair_key(*specs))
        return None if cost is None else getattr(cost, field)


def pair_key(*specs: str) -> str:
    """Canonical key of a format or an unordered pair: ``"int8"``, ``"int8*uint8"``; a pair of one format is it."""
    uniq = sorted(set(specs))
    return "*".join(uniq)


LAB_TABLE = EnergyTable(
    name="lab-horowitz-45nm",
    source="seed 004 lab table; Horowitz, ISSCC 2014, 45 nm (REFERENCE.md section 3)",
    mul={"int8": 0.2, "int32": 3.1, "fp16": 1.1, "fp32": 3.7},
    add={"int8": 0.03, "int16": 0.05, "int32": 0.1, "fp16": 0.4, "fp32": 0.9},
    shift=0.01,
)


def load_table(table: EnergyTable | Mapping[str, Any] | str | Path | None) -> EnergyTable:
    """An :class:`EnergyTable` from itself, a dict, or a YAML/JSON file; ``None`` gives :data:`LAB_TABLE`.

    Errors are ``ValueError`` naming the file, the bad field and what is valid.
    """
    if table is None:
        return LAB_TABLE
    if isinstance(table, EnergyTable):
        return table
    where = "energy table"
    if isinstance(table, str | Path):
        import yaml

        path = Path(table)
        where = f"energy table {path}"
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise ValueError(f"{where}: no such file") from None
        except yaml.YAMLError as err:
            raise ValueError(f"{where}: not valid YAML: {err}") from None
        table = data
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: expected a mapping with fields mul, add, shift (and optionally name, source, "
                         f"lookup, formats), got {type(table).__name__}")
    try:
        return EnergyTable.model_validate(dict(table))
    except ValidationError as err:
        raise ValueError(f"{where}: " + "; ".join(_describe(e) for e in err.errors())) from None


def _describe(e: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in e.get("loc", ()))
    msg = str(e.get("msg", "")).removeprefix("Value error, ")
    if e.get("type") == "extra_forbidden":
        return f"unknown field {loc!r}; valid fields: name, source, mul, add, shift, lookup, formats " \
               "(in formats entries: mul, acc, lookup)"
    if e.get("type") == "missing":
        return f"missing field {loc!r} (mul, add and shift are required)"
    if msg.startswith(tuple(f"{f}" for f in ("mul", "add", "shift", "lookup", "formats", "acc"))):
        return msg
    return f"{loc}: {msg}" if loc else msg
