"""The sweep: cells and configs, resumability, atomic results, and the report it writes."""

import json
import re

import pytest

import dtypelab.experiments.sweep as sw
from dtypelab.report import sweep_report


def test_default_cells_cover_the_issue_formats():
    labels = [c.label for c in sw.default_cells()]
    for needed in ("fp32", "e4m3", "e5m2", "posit(8,0)", "posit(8,1)", "posit(6,0)", "posit(6,1)", "lp(8,2,2,0)",
                   "lp(6,1,2,0)", "dt8", "dt3", "int8/tensor", "int8/channel", "nf4/block:64", "mxfp8", "mxfp4"):
        assert needed in labels
    posit = next(c for c in sw.default_cells() if c.label == "posit(6,1)")
    assert posit.weights("none") == "posit(6,1)" and posit.activations("adaptive") == "posit(6,1)/tensor/log2-hist"
    mx = next(c for c in sw.default_cells() if c.label == "mxfp8")
    assert mx.fixed and mx.activations("none") == "e4m3/block:32/mx"
    int8 = next(c for c in sw.default_cells() if c.label == "int8/channel")
    assert int8.activations("none") == "int8/tensor/absmax"  # activations are scaled per tensor
    assert int8.weights("adaptive") == "int8/channel/mse" and int8.activations("adaptive") == "int8/tensor/absmax"
    with pytest.raises(ValueError, match="valid: none, adaptive"):
        posit.weights("sometimes")


def test_sweep_runs_resumes_and_reports(tiny_digits, tmp_path, monkeypatch):
    formats = ["fp32", "posit(6,1)", "dt4", "mxfp4"]
    store = sw.sweep("t", [tiny_digits], formats, runs_dir=tmp_path, progress=False)
    assert len(store.results) == 8
    fp32 = store.results["tiny-digits|fp32|none"]
    assert fp32.bits_per_weight == 32.0 and fp32.primary > 90
    p6 = store.results["tiny-digits|posit(6,1)|adaptive"]
    weights = 64 * 48 + 48 * 10
    assert p6.bits_per_weight == pytest.approx((6 * weights + 2 * 32) / weights, rel=1e-12)  # fp32 scale/layer
    assert p6.weights == "posit(6,1)/tensor/log2-hist"
    assert 0 < p6.energy_pj < fp32.energy_pj  # 6-bit posit arithmetic costs less than FP32
    mx = store.results["tiny-digits|mxfp4|none"]
    assert mx.bits_per_weight == pytest.approx(4.25) and mx.size_mb < fp32.size_mb
    assert store.results["tiny-digits|mxfp4|adaptive"].metrics == mx.metrics  # computed once
    on_disk = json.loads((tmp_path / "t" / "results.json").read_text())["results"]
    assert len(on_disk) == 8
    assert (tmp_path / "t" / "results.csv").read_text().count("\n") == 9

    def fail(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(sw, "run_cell", fail)
    again = sw.sweep("t", [tiny_digits], formats, runs_dir=tmp_path, progress=False)
    assert again.results.keys() == store.results.keys()

    md, html = sweep_report.write(again, [tiny_digits])
    text = md.read_text()
    assert "PositTune table" in text and "posit(6,1)" in text and "Reading" in text
    page = html.read_text()
    assert page.count("data:image/png;base64,") >= 3
    assert not re.search(r"(src|href)=\"https?://", page)  # self-contained
    assert not list((tmp_path / "t").glob("*.tmp"))


def test_a_workload_chooses_its_default_cells(tiny_digits, tmp_path, monkeypatch):
    """A workload's ``sweep_cells`` limit the default sweep (pydoc-gpt runs only the PositTune columns); formats
    asked for by name are run whatever the workload says."""
    monkeypatch.setattr(tiny_digits, "sweep_cells", ("fp32", "int8/channel"), raising=False)
    every = sw.default_cells()
    monkeypatch.setattr(sw, "default_cells", lambda: [c for c in every if c.label in ("fp32", "int8/channel", "e4m3")])
    store = sw.sweep("c", [tiny_digits], runs_dir=tmp_path, progress=False)
    assert sorted({r.cell for r in store.results.values()}) == ["fp32", "int8/channel"]
    store = sw.sweep("d", [tiny_digits], ["e4m3"], runs_dir=tmp_path, progress=False)
    assert {r.cell for r in store.results.values()} == {"e4m3"}
    assert all(r.higher_is_better for r in store.results.values())


def test_reading_is_generated_from_numbers():
    def r(cell, scaling, value):
        return sw.Result("w", cell, scaling, None, None, "acc", {"acc": value}, 6.0, 1.0, 4.0, 0.0, 0.0, None)

    table = {(c, s): r(c, s, v) for c, s, v in [
        ("fp32", "none", 95.0), ("posit(6,1)", "none", 40.0), ("posit(6,1)", "adaptive", 94.0),
        ("e4m3", "none", 94.2), ("e4m3", "adaptive", 94.3), ("dt8", "none", 95.0), ("dt5", "none", 94.5),
        ("dt4", "none", 90.0)]}
    text = sweep_report.reading("w", table)
    assert "rescues 6-bit posits" in text and "reaches FP8" in text
    assert "down to 5 bits" in text
    table[("posit(6,1)", "adaptive")] = r("posit(6,1)", "adaptive", 41.0)
    text = sweep_report.reading("w", table)
    assert "does not visibly change" in text and "falls short of FP8" in text
    # a metric in [0, 1] (recall@1): a point is 0.01, so 0.05 -> 0.51 is a rescue and 0.54 -> 0.29 a drop
    fractions = {k: r(k[0], k[1], v.primary / 100) for k, v in table.items()}
    fractions[("posit(6,1)", "none")] = r("posit(6,1)", "none", 0.05)
    fractions[("posit(6,1)", "adaptive")] = r("posit(6,1)", "adaptive", 0.51)
    text = sweep_report.reading("w", fractions)
    assert "rescues 6-bit posits (posit(6,1) 0.050 -> 0.510)" in text and "down to 5 bits" in text


def test_bad_sweep_file(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("formats: [posit(6,1)]\nbogus: 1\n")
    with pytest.raises(ValueError, match="bogus"):
        sw.SweepFile.load(f)
