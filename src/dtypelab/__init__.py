"""dtypelab: exact, fast low-precision number formats and quantization for PyTorch models.

``import dtypelab`` stays light: formats and schemes load now, the model, experiments, cost and workload layers
on first use.

Example:
    >>> import torch, dtypelab as dl
    >>> dl.fmt("posit(8,1)").quantize(torch.tensor([0.3])).tolist()
    [0.296875]
"""

from importlib import import_module

from dtypelab.formats import Format, fmt
from dtypelab.schemes import QTensor, Scheme, fake_quantize, quantize

__version__ = "0.1.0"

_LAZY = {
    "quantize_model": ("dtypelab.model", "quantize_model"),
    "restore": ("dtypelab.model", "restore"),
    "integer": ("dtypelab.model.integer", None),
    "metrics": ("dtypelab.metrics", None),
    "workloads": ("dtypelab.workloads", None),
    "search": ("dtypelab.experiments.search", None),
    "experiments": ("dtypelab.experiments", None),
    "cost": ("dtypelab.cost", None),
    "training": ("dtypelab.training", None),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'dtypelab' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = import_module(module)
    return getattr(value, attr) if attr else value


__all__ = ["fmt", "Format", "Scheme", "QTensor", "quantize", "fake_quantize", "__version__", *_LAZY]
