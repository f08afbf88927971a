"""Schemes: how a tensor is quantized (format + granularity + scale rule + scale storage), the one quantize
pipeline (:meth:`Scheme.scale` -> :class:`Scaled`), its stored form, and fake-quant."""

from dtypelab.schemes.fake import fake_quantize
from dtypelab.schemes.granularity import Granularity, PerAxis, PerBlock, PerTensor, SortedBlock, register_granularity
from dtypelab.schemes.qtensor import QTensor, quantize
from dtypelab.schemes.scale_storage import ScaleStorage, scale_storage
from dtypelab.schemes.scales import RULES, ScaleRule, register_rule
from dtypelab.schemes.scheme import Scaled, Scheme

__all__ = ["Scheme", "Scaled", "Granularity", "PerTensor", "PerAxis", "PerBlock", "SortedBlock", "QTensor",
           "quantize", "fake_quantize", "RULES", "ScaleRule", "register_rule", "register_granularity",
           "ScaleStorage", "scale_storage"]
