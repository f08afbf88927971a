"""Per-layer sensitivity on the digits workload: each layer quantized alone, ranked, written as a table, JSON
and a plot; the figures are the definitions (metric drop, output KL, empirical Fisher) recomputed here."""

import json

import pytest
import torch

import dtypelab as dl
from dtypelab.experiments.sensitivity import layer_config, sensitivity, write

SCHEME = "int2/channel/absmax"


@pytest.fixture(scope="module")
def result(tiny_digits):
    return sensitivity(tiny_digits, SCHEME, batches=2)


def test_every_layer_is_measured_alone_and_ranked(tiny_digits, result):
    assert sorted(result.ranking()) == ["0", "2"] and result.primary_metric == "accuracy"
    fp32 = tiny_digits.evaluate(tiny_digits.model())["accuracy"]
    assert result.fp32_metric == fp32
    calib = tiny_digits.calibration(2)
    for row in result.rows:
        m = tiny_digits.model()
        dl.quantize_model(m, layer_config(row.layer, SCHEME), calibration=calib)
        other = "2" if row.layer == "0" else "0"
        assert not hasattr(m.get_submodule(other), "parametrizations")  # only that layer is quantized
        metric = tiny_digits.evaluate(m)["accuracy"]
        assert row.metric == metric and row.drop == fp32 - metric
        with torch.no_grad():
            ref = torch.cat([tiny_digits.model()(b) for b in calib]).log_softmax(-1).double()
            got = torch.cat([m(b) for b in calib]).log_softmax(-1).double()
        assert row.kl == pytest.approx(float((ref.exp() * (ref - got)).sum(-1).mean()), rel=1e-6)
        assert row.kl > 0 and row.fisher > 0
    keys = [(-r.drop, -r.kl) for r in result.rows]
    assert keys == sorted(keys)


def test_fisher_is_half_squared_gradient_times_squared_weight_error(tiny_digits, result):
    model = tiny_digits.model()
    calib = tiny_digits.calibration(2)
    sq = torch.zeros_like(model[2].weight)
    for b in calib:
        model.zero_grad()
        logits = model(b)
        torch.nn.functional.cross_entropy(logits, logits.argmax(-1)).backward()
        sq += model[2].weight.grad.square()
    w = model[2].weight.detach()
    want = 0.5 * float((sq / 2 * (dl.fake_quantize(w, SCHEME) - w).square()).sum())
    assert result.by_layer["2"].fisher == pytest.approx(want, rel=1e-5)


def test_write_gives_a_ranked_table_json_and_a_plot(result, tmp_path):
    md, js, png = write(result, tmp_path / "run")
    text = md.read_text()
    assert "| rank | layer" in text and "output KL" in text and "Fisher" in text
    rows = [line.split("|")[1:3] for line in text.splitlines() if line.startswith("|") and "---" not in line][1:]
    assert [(int(rank), layer.strip()) for rank, layer in rows] == list(enumerate(result.ranking(), 1))
    data = json.loads(js.read_text())
    assert [r["layer"] for r in data["rows"]] == result.ranking() and data["scheme"] == SCHEME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_scheme_is_named(tiny_digits):
    with pytest.raises(ValueError, match="posit"):
        sensitivity(tiny_digits, "posit(8")
