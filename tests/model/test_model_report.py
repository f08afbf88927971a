"""The report: exact bit counts (as QTensor counts them), error figures, binade histograms, files."""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
from model_helpers import SeqModel, mlp

import dtypelab as dl
from dtypelab.schemes import QTensor, Scheme, fake_quantize, quantize


@pytest.fixture(scope="module")
def quantized():
    torch.manual_seed(0)
    model, x = mlp(), torch.randn(64, 8)
    config = {"weights": "posit(6,1)/channel/log2-hist", "activations": "int8/tensor/absmax",
              "layers": [{"match": "4", "weights": "nf4/block:8/absmax", "activations": None}]}
    return model, x, dl.quantize_model(model, config, calibration=[x[:32], x[32:]])


def test_bits_per_param_are_qtensor_storage_bits(quantized):
    model, _, report = quantized
    for name in ("0", "2", "4"):
        w = model[int(name)].parametrizations.weight.original
        qt = quantize(w, Scheme.parse(report.layers[name].weight_scheme))
        assert isinstance(qt, QTensor)
        assert report.layers[name].weight_bits_per_param == qt.storage_bits / w.numel()


def test_weight_and_activation_errors(quantized):
    model, x, report = quantized
    r = report.layers["0"]
    w = model[0].parametrizations.weight.original.detach()
    q = fake_quantize(w, r.weight_scheme)
    assert r.weight_mse == pytest.approx(float(((q - w) ** 2).mean()), rel=1e-5)
    assert r.weight_sqnr_db == pytest.approx(10 * math.log10(float((w**2).sum() / ((q - w) ** 2).sum())), rel=1e-5)
    # the activation figures are those of the static scales on all calibration inputs
    scale = torch.tensor(float(x.abs().max()) / 127).float().double()
    qx = fake_quantize(x, "int8/tensor/absmax", scale)
    assert r.act_mse == pytest.approx(float(((qx - x) ** 2).mean()), rel=1e-5)
    assert r.act_scales["count"] == 1 and r.act_scales["max"] == float(scale)
    assert report.layers["4"].act_mse is None and report.layers["4"].activation_scheme is None


def test_binade_histogram_counts_every_nonzero_code(quantized):
    model, _, report = quantized
    r = report.layers["2"]
    w = model[2].parametrizations.weight.original.detach()
    s = Scheme.parse(r.weight_scheme)
    scaled = w / s.compute_scales(w)
    q = s.format.quantize(scaled)
    assert sum(r.weight_binades.values()) == int((q != 0).sum())
    expect = torch.floor(torch.log2(q[q != 0].abs())).long()
    assert r.weight_binades == {int(e): int((expect == e).sum()) for e in expect.unique()}
    assert 0 <= r.weight_saturated <= 1 and 0 <= r.weight_flushed <= 1


def test_saturation_and_flush_fractions():
    """int4/tensor/none: |x| > 7 saturates; |x| <= 0.5 (ties to even) flushes to zero."""
    lin = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.25, 20.0, -3.0, 0.0]]))
    r = dl.quantize_model(lin, {"weights": "int4"}).layers[""]
    assert r.weight_saturated == 0.25 and r.weight_flushed == 0.25
    assert r.weight_binades == {1: 1, 2: 1}  # |-3| -> 3 (binade 1), 20 -> 7 (binade 2)


def test_table_json_csv(quantized, tmp_path):
    _, _, report = quantized
    table = report.table()
    lines = table.splitlines()
    assert lines[0].startswith("| layer") and len([ln for ln in lines if ln.startswith("| ")]) == 4
    assert "MB against" in table
    report.to_json(tmp_path / "r.json")
    report.to_csv(tmp_path / "r.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]  # no temporary files left
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["size_mb"] == report.size_mb and [d["name"] for d in data["layers"]] == ["0", "2", "4"]
    assert data["layers"][0]["weight_binades"] == {str(k): v for k, v in report.layers["0"].weight_binades.items()}
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert [r["name"] for r in rows] == ["0", "2", "4"]
    assert float(rows[0]["weight_bits_per_param"]) == report.layers["0"].weight_bits_per_param
    assert rows[0]["activation_scales"] == "static"
    assert json.loads(rows[1]["weight_binades"]) == data["layers"][1]["weight_binades"]


def test_exact_weights_have_infinite_sqnr_written_as_a_string(tmp_path):
    lin = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [-4.0, 0.5]]))
    report = dl.quantize_model(lin, {"weights": "e4m3"})
    assert report.layers[""].weight_sqnr_db == math.inf
    assert json.loads(report.to_json())["layers"][0]["weight_sqnr_db"] == "inf"


def test_sizes_against_fp32():
    model = SeqModel()
    report = dl.quantize_model(model, {"weights": "int8/channel/absmax"})
    n = sum(p.numel() for p in model.parameters())
    assert report.fp32_mb == pytest.approx(n * 4 / 1e6)
    assert 3 < report.compression < 4


@pytest.mark.parametrize("scheme", ["int4/channel/absmax", "nf4/block:7/absmax", "e4m3/block:32/mx",
                                    "int8/sorted:16/absmax", "posit(6,1)/tensor/log2-hist"])
def test_stats_false_keeps_exact_sizes_and_skips_the_measurements(scheme):
    """stats=False (for search loops): same bits per weight and size as the full report, no error figures."""
    a, b = SeqModel(), SeqModel()
    b.load_state_dict(a.state_dict())
    full = dl.quantize_model(a, {"weights": scheme})
    fast = dl.quantize_model(b, {"weights": scheme}, stats=False)
    assert fast.size_mb == full.size_mb and fast.fp32_mb == full.fp32_mb
    for name, r in fast.layers.items():
        assert r.weight_bits_per_param == full.layers[name].weight_bits_per_param
        assert r.weight_mse is None and r.weight_binades == {}
    x = torch.randint(0, 40, (2, 5))
    assert torch.equal(a(x), b(x))
