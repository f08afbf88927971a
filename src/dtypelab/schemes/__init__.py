"""Schemes: how a tensor is quantized (format + granularity + scale rule), its stored form, and fake-quant."""

from dtypelab.schemes.fake import fake_quantize
from dtypelab.schemes.granularity import Granularity
from dtypelab.schemes.qtensor import QTensor, quantize
from dtypelab.schemes.scales import RULES
from dtypelab.schemes.scheme import Scheme

__all__ = ["Scheme", "Granularity", "QTensor", "quantize", "fake_quantize", "RULES"]
