"""Cost: the exact storage of a quantized model and the energy of one forward pass.

Example:
    >>> import torch, dtypelab as dl
    >>> layer = torch.nn.Linear(128, 10)
    >>> cfg = {"weights": "int8/tensor/pow2", "activations": "uint8/tensor/pow2"}
    >>> dl.cost.energy(layer, cfg, example=torch.rand(1, 128), accounting="lab").total_pj
    383.4
    >>> dl.cost.storage(layer, cfg).weight_bits    # 1280 int8 codes + one 8-bit power-of-two scale
    10248
"""

from dtypelab.cost.energy import ACCOUNTING, TERM_DOC, EnergyReport, LayerEnergy, TermLine, energy
from dtypelab.cost.storage import LayerStorage, StorageReport, storage
from dtypelab.cost.table import LAB_TABLE, EnergyTable, load_table

__all__ = ["energy", "storage", "EnergyReport", "LayerEnergy", "TermLine", "StorageReport",
           "LayerStorage", "EnergyTable", "LAB_TABLE", "load_table", "ACCOUNTING", "TERM_DOC"]
