"""dtypelab: exact, fast low-precision number formats and quantization for PyTorch models.

Example:
    >>> import torch, dtypelab as dl
    >>> dl.fmt("posit(8,1)").quantize(torch.tensor([0.3])).tolist()
    [0.296875]
"""

from dtypelab.formats import Format, fmt

__version__ = "0.1.0"
__all__ = ["fmt", "Format", "__version__"]
