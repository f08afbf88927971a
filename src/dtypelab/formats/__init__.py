"""Number formats: exact value sets and rounding. ``fmt(spec)`` is the one way in (see ``registry``)."""

from dtypelab.formats import registry
from dtypelab.formats.base import Format
from dtypelab.formats.codebook import NF4, Codebook, DynamicTree, UnsignedDynamicTree
from dtypelab.formats.float import E8M0, Domain, FloatFormat, Signedness, ieee, p3109, unsigned_float
from dtypelab.formats.integer import Integer
from dtypelab.formats.lp import LogPosit
from dtypelab.formats.posit import Posit
from dtypelab.formats.registry import (
    STANDARD_FORMATS,
    families,
    fmt,
    register_alias,
    register_family,
    register_pattern,
    valid_forms,
)


def __getattr__(name: str) -> str:
    if name == "VALID_FORMS":  # derived from the registry on every access
        return registry.valid_forms()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Format", "Posit", "LogPosit", "FloatFormat", "Domain", "Signedness", "ieee", "p3109", "unsigned_float",
           "E8M0", "Integer", "Codebook", "NF4", "DynamicTree", "UnsignedDynamicTree", "fmt", "register_family",
           "register_pattern", "register_alias", "valid_forms", "families", "STANDARD_FORMATS", "VALID_FORMS"]
