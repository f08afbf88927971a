"""What the sweep report says: 95 % intervals in every top-1 / recall@1 cell, fidelity beside recall@1, a reading
that calls a difference one only where the intervals separate, and a metric-vs-bits figure whose labels never
collide."""

from __future__ import annotations

import pytest
from report_helpers import synthetic_store

import dtypelab.experiments.sweep as sw
from dtypelab.report import sweep_report
from dtypelab.report.result_plots import _figure, _overlap, _place_labels, label_order, metric_vs_bits


def _minilm(values: dict[tuple[str, str], int], n: int = 435) -> dict[tuple[str, str], sw.Result]:
    return {(c, s): sw.Result("minilm", c, s, c, c, "recall@1", {"recall@1": hits / n, "n_queries": float(n),
                                                                  "fidelity": 0.99}, 8.0, 1.0, 4.0, 0.0, 0.0, None)
            for (c, s), hits in values.items()}


def test_a_difference_inside_the_intervals_is_not_called_one():
    """MiniLM's 0.530 vs 0.544 on 435 queries (intervals about ± 0.048) is no shortfall; 0.30 is."""
    base = {("fp32", "none"): 237, ("posit(6,1)", "none"): 150, ("e4m3", "none"): 237, ("e4m3", "adaptive"): 236}
    text = sweep_report.reading("minilm", _minilm({**base, ("posit(6,1)", "adaptive"): 231}))
    assert "reaches FP8 E4M3 quality" in text and "falls short" not in text and "intervals overlap" in text
    assert "0.531 ± 0.048" in text and "95 % interval over the 435 evaluated items" in text
    text = sweep_report.reading("minilm", _minilm({**base, ("posit(6,1)", "adaptive"): 131}))
    assert "falls short of FP8 E4M3 quality" in text
    assert "does not visibly change 6-bit posits" in text  # 150 -> 131 of 435: inside the intervals


def test_the_dynamic_tree_reading_names_the_last_width_that_holds():
    hits = {("dt8", "none"): 236, ("dt6", "none"): 233, ("dt4", "none"): 180, ("dt3", "none"): 60}
    text = sweep_report.reading("minilm", _minilm(hits))
    assert "cannot be told from DT8 down to 6 bits" in text  # dt5 was not run: not "down to 5 bits"


def test_tables_carry_intervals_and_fidelity(tmp_path):
    store = synthetic_store(tmp_path)
    minilm = sweep_report._by(store.results, "minilm")
    header, rows = sweep_report.seed002_table(minilm, ["fp32", "posit(6,1)"])
    assert header[:4] == ["format", "scaling", "recall@1", "fidelity"]
    assert rows[0][2] == "0.543 ± 0.048" and rows[0][3] == 1.0 and rows[1][3] == pytest.approx(0.935)
    digits = sweep_report._by(store.results, "digits-vgg")
    header, rows = sweep_report.seed002_table(digits, ["fp32"])
    assert "fidelity" not in header and rows[0][2] == "98.61 ± 1.8"
    header, rows = sweep_report.posittune_table(digits, ["fp32", "posit(6,0)"])
    assert header == ["format", "none scaling", "adaptive scaling"]
    assert rows[1] == ["posit(6,0)", "33.33 ± 5.1", "97.50 ± 2.2"]
    page = sweep_report.build(store).markdown()
    assert page.count(" ± ") > 4 * len(sw.default_cells()) and "error bars" in page


def test_scatter_labels_never_collide_and_the_front_comes_first():
    """A crowded 8-bit cluster: the labels placed overlap neither each other nor any marker, stay in the axes, and
    the Pareto points are labelled before the others."""
    fig, ax = _figure(9.0, 4.8)
    points = [(f"fmt{i}", 8.0 + 0.02 * (i % 5), 97.5 + 0.1 * i) for i in range(20)]
    points += [("mxfp4", 4.25, 94.4), ("fp32", 32.0, 98.6), ("dt3*", 3.5, 80.6)]
    points = label_order(points)
    for _, b, v in points:
        ax.scatter([b], [v])
    ax.set_xscale("log", base=2)
    fig.tight_layout()
    placed = _place_labels(fig, ax, points, max_labels=10)
    names = [n for n, _ in placed]
    assert names[:3] == ["dt3*", "mxfp4", "fmt15"] and "fp32" in names and 5 < len(placed) <= 10
    boxes = [b for _, b in placed]
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    frame = ax.get_window_extent(fig.canvas.get_renderer())
    assert all(frame.x0 <= b[0] and b[2] <= frame.x1 and frame.y0 <= b[1] and b[3] <= frame.y1 for b in boxes)
    markers = ax.transData.transform([(b, v) for _, b, v in points])
    own = dict(zip([n for n, _, _ in points], markers, strict=True))
    for name, box in placed:
        for other, (x, y) in own.items():
            if other != name:
                assert not _overlap(box, (x - 4, y - 4, x + 4, y + 4)), (name, other)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_metric_vs_bits_takes_error_bars(tmp_path):
    rows = [("fp32", 32.0, 98.6, 96.8, 99.5), ("posit(6,1)", 6.0, 83.3, 79.0, 87.1), ("e4m3", 8.0, 98.6)]
    out = metric_vs_bits(rows, "top1", "t", tmp_path / "m.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _perplexity(values: dict[tuple[str, str], float]) -> dict[tuple[str, str], sw.Result]:
    return {(c, s): sw.Result("pydoc-gpt", c, s, c, c, "perplexity", {"perplexity": v}, 8.0, 1.0, 4.0, 0.0, 0.0,
                              None, None, False) for (c, s), v in values.items()}


def test_a_lower_is_better_metric_reads_in_ratios():
    """Perplexity: lower is better, so a drop from 1.6e7 to 24 rescues; within 1 % is no difference."""
    base = {("fp32", "none"): 20.0, ("posit(6,0)", "none"): 1.6e7, ("e4m3", "none"): 20.1}
    text = sweep_report.reading("pydoc-gpt", _perplexity({**base, ("posit(6,0)", "adaptive"): 24.0}))
    assert "FP32 scores perplexity 20 (lower is better)" in text and "compared as ratios" in text
    assert "Adaptive scaling rescues 6-bit posits" in text and "1.6e+07 (8e+05x FP32) -> 24 (1.200x FP32)" in text
    assert "falls short of FP8 E4M3 quality" in text
    text = sweep_report.reading("pydoc-gpt", _perplexity({**base, ("posit(6,0)", "adaptive"): 20.15}))
    assert "reaches FP8 E4M3 quality" in text and "within 1 %" in text  # 20.15 vs 20.1: inside the 1 % band
    text = sweep_report.reading("pydoc-gpt", _perplexity({**base, ("posit(6,0)", "adaptive"): 19.0}))
    assert "exceeds FP8 E4M3 quality" in text


def test_the_pareto_front_of_a_lower_is_better_metric(tmp_path):
    rows = [("fp32", 32.0, 20.0), ("posit(6,0)", 6.0, 1.6e7), ("posit(6,0)*", 6.0, 24.0), ("e4m3", 8.0, 20.1)]
    order = [p[0] for p in label_order(rows, higher_is_better=False)]
    assert order[:3] == ["posit(6,0)*", "e4m3", "fp32"] and order[-1] == "posit(6,0)"
    path = metric_vs_bits(rows, "perplexity", "t", tmp_path / "p.png", higher_is_better=False)
    assert path.stat().st_size > 1000


def test_a_calibration_comparison_in_the_run_directory_adds_its_tables(tmp_path):
    import json

    from dtypelab.report.calibration_report import tables

    store = synthetic_store(tmp_path)
    assert "4-bit weights" not in sweep_report.build(store).markdown()

    def row(part, fmt, method, value):
        return {"part": part, "format": fmt, "method": method, "metrics": {"recall@1": value},
                "primary_metric": "recall@1"}

    result = {"workload": "minilm", "rows": [row("fp32", "fp32", "none", 0.54), row("weights", "nf4", "rtn", 0.4),
                                             row("weights", "nf4", "gptq", 0.45), row("activations", "int8",
                                                                                      "entropy", 0.5)]}
    (tmp_path / "calibration.json").write_text(json.dumps(result))
    (weights, header, body), (acts, header2, body2) = tables(result)
    assert "FP32 0.5400" in weights and header == ["format", "rtn", "gptq", "awq"] and body == [["nf4", 0.4, 0.45, ""]]
    assert header2[1:] == ["absmax", "percentile:99.99", "entropy"] and body2 == [["int8", "", "", 0.5]]
    page = sweep_report.build(store).markdown()
    assert weights in page and acts in page and "| nf4    | 0.4 | 0.45 |" in page
    lm = {"workload": "pydoc-gpt", "rows": [{**r, "metrics": {"perplexity": 10 / r["metrics"]["recall@1"],
                                                          "kl": 1 - r["metrics"]["recall@1"]},
                                             "primary_metric": "perplexity"} for r in result["rows"]]}
    (tmp_path / "calibration-pydoc-gpt.json").write_text(json.dumps(lm))
    page = sweep_report.build(store).markdown()
    (lm_weights, _, lm_body), (lm_acts, _, _) = tables(lm)
    assert "pydoc-gpt: 4-bit weights" in lm_weights and "(perplexity / kl; FP32 18.5185 / 0.46)" in lm_weights
    assert lm_body == [["nf4", "25.0000 / 0.6", "22.2222 / 0.55", ""]]
    assert page.index(weights) < page.index(lm_weights) < page.index(lm_acts) and "| 22.2222 / 0.55 |" in page


def test_an_accumulator_study_in_the_run_directory_adds_its_section(tmp_path):
    import json

    from dtypelab.experiments import arith

    store = synthetic_store(tmp_path)
    assert "Accumulators" not in sweep_report.build(store).markdown()
    rows = [{"storage": "fp32", "accumulator": "fp32 (torch)", "compute": None, "recall@1": 0.54, "fidelity": 1.0,
             "energy_pj": 6.0e8, "seconds": 20.0},
            {"storage": "e4m3", "accumulator": "align:13/128", "compute": {"accumulator": "align:13"},
             "recall@1": 0.5123, "fidelity": 0.98765, "energy_pj": 1.25e8, "seconds": 95.0}]
    paths = arith.write(rows, tmp_path, "minilm", limit=3)
    assert [p.name for p in paths] == ["arith.json", "arith.md"]
    assert json.loads(paths[0].read_text())["rows"] == rows
    page = sweep_report.build(store).markdown()
    assert "Accumulators (minilm, the first 3 topics)" in page
    assert "| e4m3    | align:13/128 |   0.5123 |  0.98765 |    125.00 |" in page
