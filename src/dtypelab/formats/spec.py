"""Spec strings -> Formats, in one place: ``fmt("posit(8,1)")``, ``fmt("e4m3")``, ``fmt("int8")`` ...

Example:
    >>> import dtypelab as dl
    >>> dl.fmt("posit8"), dl.fmt("FP(5, 2)"), dl.fmt("uint4")
    (fmt('posit(8,0)'), fmt('e5m2'), fmt('uint4'))
    >>> str(dl.fmt("lp(8,2,2,0.5)"))
    'lp(8,2,2,0.5)'
"""

from __future__ import annotations

import re
from collections.abc import Callable

from dtypelab.formats.base import Format
from dtypelab.formats.codebook import NF4, Codebook, DynamicTree
from dtypelab.formats.integer import Integer
from dtypelab.formats.lp import LogPosit
from dtypelab.formats.minifloat import FINITE, FN, IEEE, OCP_FINITE, Minifloat
from dtypelab.formats.posit import Posit

VALID_FORMS = (
    "posit(n,es) | posit8 | posit16 | posit32 | lp(n,es,rs,sf) | fp(e,m) | eXmY (e4m3, e5m2, e3m2, e2m3, "
    "e2m1, ...) | bf16 | fp16 | int(n) | intN | uint(n) | uintN | dt(n) | dtN | nf4 | codebook(v1,v2,...)"
)

ALIASES = {
    "posit8": "posit(8,0)", "posit16": "posit(16,1)", "posit32": "posit(32,2)",
    "bf16": "fp(8,7)", "bfloat16": "fp(8,7)", "fp16": "fp(5,10)", "float16": "fp(5,10)",
    "e4m3fn": "e4m3", "nf4": "nf4()",
}


def _ints(args: list[str], count: int, name: str) -> list[int]:
    if len(args) != count:
        raise ValueError(f"{name} takes {count} integer argument(s), got {len(args)}")
    try:
        return [int(a) for a in args]
    except ValueError:
        raise ValueError(f"{name}: arguments must be integers, got {args}") from None


def _lp(args: list[str]) -> Format:
    if len(args) not in (3, 4):
        raise ValueError(f"lp takes (n,es,rs) or (n,es,rs,sf), got {len(args)} arguments")
    n, es, rs = _ints(args[:3], 3, "lp")
    try:
        sf = float(args[3]) if len(args) == 4 else 0.0
    except ValueError:
        raise ValueError(f"lp: sf must be a real number, got {args[3]!r}") from None
    return LogPosit(n, es, rs, sf)


def _minifloat(e: int, m: int) -> Format:
    return Minifloat(e, m, OCP_FINITE.get((e, m), IEEE))


def _codebook(args: list[str]) -> Format:
    try:
        return Codebook(tuple(float(a) for a in args))
    except ValueError as err:
        raise ValueError(f"codebook: {err}") from None


FAMILIES: dict[str, Callable[[list[str]], Format]] = {
    "posit": lambda a: Posit(*_ints(a, 2, "posit")),
    "lp": _lp,
    "fp": lambda a: Minifloat(*_ints(a, 2, "fp"), IEEE),
    "int": lambda a: Integer(*_ints(a, 1, "int"), True),
    "uint": lambda a: Integer(*_ints(a, 1, "uint"), False),
    "dt": lambda a: DynamicTree(*_ints(a, 1, "dt")),
    "nf4": lambda a: NF4(*_ints(a, 0, "nf4")),
    "codebook": _codebook,
}
_CALL = re.compile(r"([a-z][a-z0-9]*)\((.*)\)")
_SUFFIXED = re.compile(r"(int|uint|dt)(\d+)")
_EXMY = re.compile(r"e(\d+)m(\d+)")


def fmt(spec: str | Format) -> Format:
    """Parse a format spec (see ``VALID_FORMS``); a Format passes through unchanged."""
    if isinstance(spec, Format):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a format spec must be a string or Format, got {type(spec).__name__}")
    s = ALIASES.get(spec.strip().lower().replace(" ", ""), spec.strip().lower().replace(" ", ""))
    if s in ("e4m3",):
        return Minifloat(4, 3, FN)
    if m := _EXMY.fullmatch(s):
        return _minifloat(int(m[1]), int(m[2]))
    if m := _SUFFIXED.fullmatch(s):
        return FAMILIES[m[1]]([m[2]])
    if (m := _CALL.fullmatch(s)) and m[1] in FAMILIES:
        args = [a for a in m[2].split(",")] if m[2] else []
        return FAMILIES[m[1]](args)
    raise ValueError(f"unknown format spec {spec!r}; valid forms: {VALID_FORMS}")


__all__ = ["fmt", "VALID_FORMS", "FINITE", "FN", "IEEE"]
