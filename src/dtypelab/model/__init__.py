"""Models: config rules -> a model quantized in place (weights by parametrizations, activations by pre-hooks),
calibration, the per-layer report, restore, and the lab's integer-only int8 reference path.

Example:
    >>> import torch, dtypelab as dl
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    >>> from dtypelab.model import resolve
    >>> sorted(resolve(m, {"weights": "int8"}))
    ['0']
"""

from dtypelab.model.config import LayerPlan, LayerRule, QuantConfig, resolve
from dtypelab.model.layers import LAYER_KINDS, LayerKind, register_layer_kind
from dtypelab.model.quantize import quant_state, quantize_model, restore
from dtypelab.model.report import LayerReport, QuantReport

__all__ = ["QuantConfig", "LayerRule", "LayerPlan", "resolve", "quantize_model", "restore", "quant_state",
           "QuantReport", "LayerReport", "LAYER_KINDS", "LayerKind", "register_layer_kind"]
