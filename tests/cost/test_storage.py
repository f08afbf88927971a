"""Storage model: bit counts agree exactly with the QTensor of every quantized weight."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dtypelab as dl
from dtypelab.cost import storage
from dtypelab.model.config import resolve
from dtypelab.model.layers import kind_of, raw_weight


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.conv = nn.Conv1d(16, 8, 3)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 5)


CONFIGS = [
    {"weights": "int8/tensor/pow2", "activations": "uint8/tensor/pow2"},
    {"weights": "posit(6,1)/channel/log2-hist"},
    {"weights": "nf4/block:64/absmax"},
    {"weights": "mxfp4", "layers": [{"match": "Embedding", "weights": "int4/channel/absmax"}]},
    {"weights": "e4m3/sorted:16/absmax"},
    {"weights": "lp(8,2,2,0)/tensor/log2-energy", "layers": [{"match": "head", "weights": None}]},
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c["weights"])
def test_storage_agrees_with_qtensor_bits(config):
    """Sum over quantized weights of ``dl.quantize(w, scheme).storage_bits`` == the report's weight bits."""
    torch.manual_seed(0)
    model = Net()
    expected = 0
    for plan in resolve(model, config).values():
        for owner, attr in kind_of(plan.module).weights(plan.module):
            w = raw_weight(owner, attr)
            expected += dl.quantize(w, plan.weight).storage_bits if plan.weight else 32 * w.numel()
    r = storage(model, config)
    assert r.weight_bits == expected
    params = sum(p.numel() for p in model.parameters())
    assert sum(row.weight_elems + row.other_elems for row in r.rows) == params
    assert r.fp32_bits == 32 * params
    assert r.total_mb == r.total_bits / 8e6


def test_fp32_config_is_32_bits_per_parameter():
    model = Net()
    r = storage(model, None)
    assert r.total_bits == r.fp32_bits == 32 * sum(p.numel() for p in model.parameters())
    assert r.compression == 1.0


def test_rest_row_and_table():
    """Norms outside quantizable layers land in the last row; the Markdown table has a total."""
    model = Net()
    r = storage(model, {"weights": "int8/channel/absmax"})
    assert r.rows[-1].name.startswith("(rest") and r.rows[-1].other_elems == 16
    assert "**total**" in r.table()
    assert r.to_dict()["total_bits"] == r.total_bits


def test_tied_weights_are_counted_once():
    emb, head = nn.Embedding(10, 4), nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    model = nn.Sequential(emb, head)
    r = storage(model, {"weights": "int8/channel/absmax"})
    assert r.weight_bits == dl.quantize(emb.weight, "int8/channel/absmax").storage_bits


def test_total_agrees_with_quantize_model_report():
    """``storage`` and ``dl.quantize_model``'s report count the same bits."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    config = {"weights": "int4/block:32/absmax", "layers": [{"match": "Conv2d", "weights": "posit(8,1)"}]}
    expected = storage(model, config)
    report = dl.quantize_model(model, config)
    assert expected.total_mb == pytest.approx(report.size_mb, rel=1e-12)
    assert expected.fp32_bits / 8e6 == pytest.approx(report.fp32_mb, rel=1e-12)
    assert storage(model, config).total_bits == expected.total_bits  # a quantized model counts the same
