"""evaluate(): one example batch for every energy figure, and the same numbers as the pieces it is made of."""

import pytest
import torch
from torch import nn

from dtypelab.experiments.evaluate import cost_breakdown, evaluate, example_batch, first_example
from dtypelab.experiments.sweep import cells_for, run_cell
from dtypelab.workloads import Workload


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids) * attention_mask.unsqueeze(-1)
        return self.fc(h.sum(1) / attention_mask.sum(1, keepdim=True))


class Padded(Workload):
    """Texts of different lengths padded to the longest in the batch (as MiniLM's are)."""

    name, primary_metric = "padded", "score"

    def _build_model(self):
        return Bag()

    def calibration(self, n_batches=4):
        ids = torch.arange(1, 25).reshape(3, 8) % 50
        mask = torch.tensor([[1] * 3 + [0] * 5, [1] * 8, [1] * 5 + [0] * 3])
        return [{"input_ids": ids, "attention_mask": mask}] * n_batches

    def run(self, model, batch):
        return model(**batch)

    def evaluate(self, model, limit=None):
        with torch.no_grad():
            return {"score": float(model(**self.calibration(1)[0]).abs().mean())}


def test_the_example_is_one_item_without_its_padding():
    one = example_batch(Padded())
    assert one["input_ids"].tolist() == [[1, 2, 3]] and one["attention_mask"].tolist() == [[1, 1, 1]]
    assert first_example((torch.ones(3, 2), torch.zeros(3))).shape == (1, 2)
    with pytest.raises(ValueError, match="type int"):
        first_example(3)


def test_sweep_energy_equals_the_cost_command_energy():
    """The sweep's energy column and ``dtypelab cost`` measured different examples (padding kept in one)."""
    wl = Padded()
    cell = cells_for(["int8/channel/absmax"])[0]
    row = run_cell(wl, cell, "none")
    config = {"weights": row.weights, "activations": row.activations, "activation_scales": "dynamic",
              "layers": [{"match": "Embedding", "weights": None}]}
    assert row.energy_pj == cost_breakdown(wl, config).energy.total_pj
    assert row.energy_pj == evaluate(wl, config).energy_pj


def test_evaluate_measures_what_quantize_model_reports():
    import dtypelab as dl

    wl = Padded()
    config = {"weights": "posit(6,1)/tensor/log2-hist"}
    o = evaluate(wl, config, energy=False)
    model = wl.model()
    report = dl.quantize_model(model, config)
    assert o.metrics == wl.evaluate(model) and o.size_mb == report.size_mb and o.energy_pj is None
    weights = 50 * 16 + 16 * 4
    assert o.bits_per_weight == pytest.approx((6 * weights + 2 * 32) / weights, rel=1e-12)
    fp32 = evaluate(wl, None)
    assert fp32.bits_per_weight == 32.0 and fp32.report is None and fp32.energy_pj > 0
