"""Training in low precision: an optimizer wrapper with formats for weights, gradients and states
(:mod:`~dtypelab.training.optim`), loss scaling (:mod:`~dtypelab.training.scaler`); the backward's formats are
:mod:`dtypelab.model.backward`, training runs :mod:`dtypelab.experiments.train`.

Example:
    >>> import torch, dtypelab as dl
    >>> w = torch.nn.Parameter(torch.ones(4))
    >>> opt = dl.training.LowPrecisionOptimizer(torch.optim.SGD([w], lr=1e-3), weight="bf16")
    >>> w.grad = torch.ones(4); opt.step(); w.tolist()      # 1 - 1e-3 rounds back to 1 in bf16: nearest stalls
    [1.0, 1.0, 1.0, 1.0]
"""

from dtypelab.training.optim import LowPrecisionOptimizer
from dtypelab.training.scaler import LossScaler, loss_scaler

__all__ = ["LowPrecisionOptimizer", "LossScaler", "loss_scaler"]
