"""Spec strings -> Formats: one registry of families, short forms and aliases; ``fmt()`` reads it.

Each format module registers its own spec forms when it is imported: a call form ``name(args)``
(:func:`register_family`), short forms such as ``int8`` or ``e4m3`` (:func:`register_pattern`) and fixed names
(:func:`register_alias`). A new family is one file: its class and one ``register_family`` call. The list of
valid forms (:func:`valid_forms`, also ``VALID_FORMS``) is derived from what is registered.

Resolution: aliases (exact names) first, then ``name(args)`` of a registered family, then the short forms.
Specs are read case-insensitively, spaces ignored.

Example:
    >>> import dtypelab as dl
    >>> dl.fmt("posit8"), dl.fmt("FP(5, 2)"), dl.fmt("uint4")
    (fmt('posit(8,0)'), fmt('e5m2'), fmt('uint4'))
    >>> str(dl.fmt("lp(8,2,2,0.5)"))
    'lp(8,2,2,0.5)'
    >>> "posit(n,es)" in valid_forms()
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from dtypelab.formats.base import Format

Parser = Callable[[list[str]], Format]
"""Turns the comma-separated arguments of a spec (strings, spaces removed) into a Format; raises ValueError."""

#: The formats ``dtypelab formats`` lists and ``benchmarks/formats.py`` times (canonical or short specs).
STANDARD_FORMATS: tuple[str, ...] = (
    "posit(8,0)", "posit(8,1)", "posit(6,0)", "posit(6,1)", "posit(16,1)", "posit(32,2)", "lp(8,2,2,0)",
    "lp(6,1,2,0)", "e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "bf16", "fp16", "int8", "int4", "uint8",
    "dt8", "dt6", "dt4", "nf4", "binary8p3se", "binary8p4se", "binary8p3ue", "ue4m3",
)


@dataclass
class _Registry:
    families: dict[str, tuple[Parser, tuple[str, ...]]] = field(default_factory=dict)
    patterns: list[tuple[re.Pattern[str], Parser, str]] = field(default_factory=list)
    aliases: dict[str, Format] = field(default_factory=dict)


_REGISTRY = _Registry()
_CALL = re.compile(r"([a-z][a-z0-9_]*)\((.*)\)")


def _normal(spec: str) -> str:
    return spec.strip().lower().replace(" ", "")


def register_family(name: str, parser: Parser, *, forms: tuple[str, ...] = ()) -> None:
    """Make ``fmt("name(a,b,...)")`` call ``parser(["a", "b", ...])``; ``forms`` document it (default ``name(...)``).

    Example (posit.py registers ``register_family("posit", _parse, forms=("posit(n,es)",))``):
        >>> "posit" in families(), fmt("posit(6,1)").bits
        (True, 6)
    """
    key = _normal(name)
    if not _CALL.fullmatch(f"{key}()"):
        raise ValueError(f"a family name must be a letter then letters, digits or _, got {name!r}")
    if key in _REGISTRY.families:
        raise ValueError(f"format family {key!r} is already registered")
    _REGISTRY.families[key] = (parser, forms or (f"{key}(...)",))


def register_pattern(pattern: str, parser: Parser, form: str) -> None:
    """A short form: a spec that fully matches the regex ``pattern`` gives ``parser(list(match.groups()))``.

    Example:
        >>> fmt("int6") == fmt("int(6)")   # int.py: register_pattern(r"int(\\d+)", ..., "intN")
        True
    """
    _REGISTRY.patterns.append((re.compile(pattern), parser, form))


def register_alias(name: str, target: str | Format) -> None:
    """A fixed name for a format (``target`` is parsed now).

    Example:
        >>> fmt("bfloat16") == fmt("bf16") == fmt("fp(8,7)")
        True
    """
    key = _normal(name)
    if key in _REGISTRY.aliases:
        raise ValueError(f"format alias {key!r} is already registered")
    _REGISTRY.aliases[key] = fmt(target)


def valid_forms() -> str:
    """Every registered form, ``" | "``-separated (families, short forms, then names).

    Example:
        >>> "e8m0" in valid_forms().split(" | ")
        True
    """
    families = [form for _, forms in _REGISTRY.families.values() for form in forms]
    return " | ".join([*families, *(form for _, _, form in _REGISTRY.patterns), *_REGISTRY.aliases])


def families() -> tuple[str, ...]:
    """Names of the registered families (the ``name`` of ``name(args)``).

    Example:
        >>> {"posit", "lp", "fp", "float", "int"} <= set(families())
        True
    """
    return tuple(_REGISTRY.families)


def fmt(spec: str | Format) -> Format:
    """Parse a format spec (see :func:`valid_forms`); a Format passes through unchanged.

    Example:
        >>> fmt("e4m3fn"), fmt("int(8)") == fmt("int8")
        (fmt('e4m3'), True)
    """
    if isinstance(spec, Format):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a format spec must be a string or Format, got {type(spec).__name__}")
    s = _normal(spec)
    if s in _REGISTRY.aliases:
        return _REGISTRY.aliases[s]
    if (m := _CALL.fullmatch(s)) and m[1] in _REGISTRY.families:
        return _REGISTRY.families[m[1]][0](m[2].split(",") if m[2] else [])
    for pattern, parser, _ in _REGISTRY.patterns:
        if m := pattern.fullmatch(s):
            return parser(list(m.groups()))
    raise ValueError(f"unknown format spec {spec!r}; valid forms: {valid_forms()}")


def int_args(args: list[str], count: int, name: str) -> list[int]:
    """``count`` integer arguments of family ``name``, or a ValueError saying what was wrong.

    Example:
        >>> int_args(["8", "1"], 2, "posit")
        [8, 1]
    """
    if len(args) != count:
        raise ValueError(f"{name} takes {count} integer argument(s), got {len(args)}")
    try:
        return [int(a) for a in args]
    except ValueError:
        raise ValueError(f"{name}: arguments must be integers, got {args}") from None


def __getattr__(name: str) -> str:
    if name == "VALID_FORMS":  # derived on every access, so it never drifts from the registry
        return valid_forms()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["fmt", "register_family", "register_pattern", "register_alias", "valid_forms", "families",
           "int_args", "STANDARD_FORMATS", "Parser"]
