"""Number formats: exact value sets and rounding. ``fmt(spec)`` is the one way in."""

from dtypelab.formats.base import Format
from dtypelab.formats.codebook import NF4, Codebook, DynamicTree
from dtypelab.formats.integer import Integer
from dtypelab.formats.lp import LogPosit
from dtypelab.formats.minifloat import Minifloat
from dtypelab.formats.posit import Posit
from dtypelab.formats.spec import VALID_FORMS, fmt

__all__ = ["Format", "Posit", "LogPosit", "Minifloat", "Integer", "Codebook", "NF4", "DynamicTree", "fmt",
           "VALID_FORMS"]
