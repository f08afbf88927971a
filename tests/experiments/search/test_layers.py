"""The search configures every layer kind of the model layer registry (MultiheadAttention included)."""

import torch
from torch import nn

import dtypelab as dl
from dtypelab.experiments.search import GASettings, search
from dtypelab.experiments.search.problem import build_problem, searched_layers


class Attn(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(8, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        h = self.inp(x)
        return self.head(self.attn(h, h, h, need_weights=False)[0].mean(1))


class AttnWorkload:
    name, primary_metric = "attn", "agreement"

    def __init__(self):
        self.x = torch.randn(24, 5, 8, generator=torch.Generator().manual_seed(1))
        self._model = Attn().eval()
        with torch.no_grad():
            self.reference = self._model(self.x).argmax(1)

    def model(self):
        import copy

        return copy.deepcopy(self._model).eval()

    def calibration(self, n_batches=2):
        return [self.x[8 * i:8 * (i + 1)] for i in range(n_batches)]

    def run(self, model, batch):
        return model(batch)

    def evaluate(self, model, limit=None):
        with torch.no_grad():
            return {"agreement": 100.0 * float((model(self.x).argmax(1) == self.reference).float().mean())}


def test_attention_is_searched_as_one_layer_with_all_its_weights():
    wl = AttnWorkload()
    assert searched_layers(wl.model()) == ["inp", "attn", "head"]  # not attn.out_proj: attention owns it
    problem = build_problem(wl, ["int8/tensor/absmax", "posit(6,1)/tensor/log2-hist"], [None])
    i = problem.layers.index("attn")
    assert problem.numel[i] == 3 * 16 * 16 + 16 * 16  # in_proj_weight + out_proj.weight
    assert problem.costs[i][0] == (3 * 16 * 16 + 16 * 16) * 6 + 2 * 32  # posit(6,1), one scale per tensor
    assert all(d[0] > 0 for d in problem.local[i])  # a real divergence, measured through the attention


def test_search_result_quantizes_the_attention(tmp_path):
    wl = AttnWorkload()
    result = search(wl, space=["int8/tensor/absmax", "posit(6,1)/tensor/log2-hist"], budget=7.5,
                    settings=GASettings(population=4, generations=1), executor="serial", out_dir=tmp_path)
    rules = {r["match"]: r["weights"] for r in result.best.config["layers"]}
    assert set(rules) == {"re:^inp$", "re:^attn$", "re:^head$"}
    model = wl.model()
    report = dl.quantize_model(model, result.best.config)
    assert report.layers["attn"].weight_scheme == rules["re:^attn$"]
