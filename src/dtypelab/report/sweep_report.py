"""The sweep report: ``report.md`` and a self-contained ``report.html`` in the run directory.

Sections: a generated reading of the results; per workload the PositTune table (rows the formats, columns
no-scaling / adaptive, cells the primary metric), the seed-002 table (metric, fidelity where measured, size in
MB with every scale, weight MSE), metric against bits per weight with the Pareto front, and per-layer
histograms of log2|w| with each format's high-accuracy region; the formats' worst-case decimal accuracy; the
digits-vgg training curves; and our numbers beside the seeds' published ones.

Top-1 and recall@k carry exact 95 % intervals over the evaluated items (:mod:`dtypelab.report.confidence`):
``98.61 ± 1.8`` in the tables, error bars in the figures; the reading calls a difference one only where the
intervals do not overlap. Each format has one colour in every figure (:mod:`dtypelab.report.colors`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from dtypelab._io import atomic_write
from dtypelab.report.confidence import PROPORTIONS, Interval, interval
from dtypelab.report.document import Document

log = logging.getLogger(__name__)

#: the sweep's scaling rows, in the order the PositTune table shows them
SCALING_ROWS = ("none", "adaptive")


class Result(Protocol):
    """What the report reads of a sweep row (``dtypelab.experiments.store.Result``)."""

    workload: str
    cell: str
    scaling: str
    primary_metric: str
    bits_per_weight: float
    size_mb: float
    weight_mse: float
    energy_pj: float | None

    @property
    def primary(self) -> float: ...


class ResultStore(Protocol):
    """What the report reads of a result store: its directory and its rows by key."""

    dir: Path
    results: dict[str, Any]

HISTOGRAM_FORMATS = ("posit(8,1)", "posit(6,1)", "e4m3", "lp(8,2,2,0)")
ACCURACY_FORMATS = ("posit(8,1)", "posit(6,1)", "lp(8,2,2,0)", "lp(6,1,2,0)", "e4m3", "e5m2", "int8")

# REFERENCE.md section 3: the seeds' published results (their models; not loadable here).
SEED_POSITTUNE = [
    ("GPT-2-large WikiText-2 perplexity (lower is better)", "FP32 19.44, FP8 19.54; posit(8,0) 21.32 -> 19.41 "
     "adaptive; posit(8,1) 19.48 -> 19.479; posit(6,0) 1.6e7 -> 24.03; posit(6,1) 21.83 -> 20.12"),
    ("ALBERT-xlarge SQuAD-v2 F1", "FP32 86.19, FP8 85.36, posit(6,1) 83.62, posit(6,1) adaptive 85.85"),
]
SEED_DT = "AlexNet CIFAR-10, their 'DT' by bits 8..3: 85.22, 85.22, 85.12, 85.06, 84.87, 83.51 %; int8 83 %, fp8 82 %"


def _by(results: dict[str, Result], workload: str) -> dict[tuple[str, str], Result]:
    return {(r.cell, r.scaling): r for r in results.values() if r.workload == workload}


def _point(table: dict[tuple[str, str], Result]) -> float:
    """One "point" of the primary metric: 0.01 for a fraction (recall@1 in [0, 1]), else 1 (a percentage). A
    lower-is-better metric (perplexity) is compared by ratios instead (:data:`RATIO_BAND`)."""
    return 0.01 if all(abs(r.primary) <= 1 for r in table.values()) else 1.0


RATIO_BAND = 1.01  # without an interval, lower-is-better values within 1 % of each other are not called different


def _higher(table: dict[tuple[str, str], Result]) -> bool:
    return all(getattr(r, "higher_is_better", True) for r in table.values())


def _fmt(v: float, point: float = 1.0) -> float:
    return round(v, 2 if point == 1 else 4)


def _digits(point: float) -> int:
    return 2 if point == 1 else 3


def _interval(r: Result, point: float) -> Interval:
    """The primary metric's 95 % interval; without a recorded item count, a band one point wide (so that a
    difference under a point is never called one), or for a lower-is-better metric a band of ±0.5 %."""
    iv = interval(r.metrics, r.primary_metric)
    if iv is not None:
        return iv
    if not getattr(r, "higher_is_better", True):
        half = RATIO_BAND ** 0.5
        return Interval(r.primary, r.primary / half, r.primary * half)
    return Interval(r.primary, r.primary - point / 2, r.primary + point / 2)


def _shown(r: Result, point: float) -> str | float:
    """A table cell: ``value ± half-width`` of the 95 % interval, or the rounded value when none is known."""
    iv = interval(r.metrics, r.primary_metric)
    return _fmt(r.primary, point) if iv is None else iv.show(_digits(point))


def reading(workload: str, table: dict[tuple[str, str], Result]) -> str:
    """One paragraph on the seeds' findings, generated from this workload's numbers; a difference is called one
    only where the 95 % intervals do not overlap."""
    def iv(cell: str, scaling: str) -> Interval | None:
        r = table.get((cell, scaling))
        return _interval(r, point) if r else None

    any_r = next(iter(table.values()))
    key = any_r.primary_metric
    point = _point(table)
    digits = _digits(point)
    known = interval(any_r.metrics, key) is not None
    higher = _higher(table)
    fp32 = iv("fp32", "none")

    def show(v: Interval) -> str:
        if not higher:  # perplexity: the value and its ratio to FP32
            r = v.value / fp32.value if fp32 is not None and fp32.value > 0 else None
            ratio = "" if r is None else f" ({r:.3g}x FP32)" if r >= 10 else f" ({r:.3f}x FP32)"
            return f"{v.value:.4g}{ratio}"
        return v.show(digits) if known else f"{v.value:.{digits}f}"

    def better(a: Interval, b: Interval) -> bool:
        return a.above(b) if higher else b.above(a)

    def best(vs: Sequence[Interval]) -> Interval:
        return (max if higher else min)(vs, key=lambda v: v.value)

    parts = []
    if fp32 is not None and higher:
        parts.append(f"On {workload}, FP32 scores {key} {show(fp32)}{'' if point == 1 else ' (a fraction)'}.")
    elif fp32 is not None:
        parts.append(f"On {workload}, FP32 scores {key} {fp32.value:.4g} (lower is better).")
    if known:
        counts = "/".join(f"{n:.0f}" for n in sorted({r.metrics[PROPORTIONS[key].count] for r in table.values()}))
        parts.append(f"± is the larger side of the exact 95 % interval over the {counts} evaluated items; a "
                     "difference is called one only where the intervals do not overlap.")
    elif not higher:
        parts.append(f"Values are compared as ratios: within {100 * (RATIO_BAND - 1):.0f} % of each other they are "
                     "not called different.")
    else:
        parts.append("No item count is recorded for this metric, so no interval is known: a difference under one "
                     f"point ({point}) is not called one.")
    p6 = {c: (iv(c, "none"), iv(c, "adaptive")) for c in ("posit(6,0)", "posit(6,1)")}
    p6 = {c: v for c, v in p6.items() if None not in v}
    if p6:
        gains = [f"{c} {show(n)} -> {show(a)}" for c, (n, a) in p6.items()]
        if any(better(a, n) for n, a in p6.values()):
            verdict = "rescues"
        elif any(better(n, a) for n, a in p6.values()):
            verdict = "lowers"
        else:
            verdict = "does not visibly change"
        parts.append(f"Adaptive scaling {verdict} 6-bit posits ({'; '.join(gains)}).")
        fp8 = [v for v in (iv("e4m3", "none"), iv("e4m3", "adaptive")) if v is not None]
        if fp8:
            best6 = best([a for _, a in p6.values()])
            best8 = best(fp8)
            verdict = "exceeds" if better(best6, best8) else "falls short of" if better(best8, best6) else "reaches"
            overlap = "the intervals overlap" if higher else f"within {100 * (RATIO_BAND - 1):.0f} %"
            tie = f"; {overlap}" if verdict == "reaches" and best6.value != best8.value else ""
            parts.append(f"The best 6-bit adaptive posit ({show(best6)}) {verdict} FP8 E4M3 quality "
                         f"({show(best8)}{tie}).")
    dts = [(n, iv(f"dt{n}", "none")) for n in range(8, 2, -1) if iv(f"dt{n}", "none") is not None]
    if len(dts) > 1:
        curve = ", ".join(f"DT{n} {show(v)}" for n, v in dts)
        top = dts[0][1]
        broken = next((i for i, (_, v) in enumerate(dts) if better(top, v)), None)
        shape = (f"it cannot be told from DT8 down to {dts[broken - 1][0]} bits and drops below that" if broken
                 else "it cannot be told from DT8 at any width")
        parts.append(f"The real dynamic tree is not flat like the seed's defective one: {curve}; {shape}.")
    return " ".join(parts)


def posittune_table(table: dict[tuple[str, str], Result], cells: Sequence[str]) -> tuple[list[str], list[list]]:
    """One row per format, one column per scaling (the PositTune table, turned so that it fits a page)."""
    point = _point(table)
    rows = [[c, *(_shown(table[(c, s)], point) if (c, s) in table else "" for s in SCALING_ROWS)] for c in cells]
    return ["format", *(f"{s} scaling" for s in SCALING_ROWS)], rows


def seed002_table(table: dict[tuple[str, str], Result], cells: Sequence[str]) -> tuple[list[str], list[list]]:
    key = next(iter(table.values())).primary_metric
    fidelity = any("fidelity" in r.metrics for r in table.values())
    header = ["format", "scaling", key, *(["fidelity"] if fidelity else []), "bits/weight", "size MB", "weight MSE",
              "energy nJ/sample"]
    rows = []
    point = _point(table)
    for c in cells:
        r = table.get((c, "none"))
        if r:
            energy = "" if r.energy_pj is None else round(r.energy_pj / 1000, 1)
            fid = [round(r.metrics["fidelity"], 4) if "fidelity" in r.metrics else ""] if fidelity else []
            rows.append([c, "none", _shown(r, point), *fid, round(r.bits_per_weight, 3), round(r.size_mb, 4),
                         f"{r.weight_mse:.3g}", energy])
    return header, rows


def build(store: ResultStore, workloads: Sequence[Any] = (), title: str = "dtypelab sweep",
          training_plot: Callable[[Path], Path | None] | None = None) -> Document:
    """The report of a sweep. ``workloads`` (objects) give the weight histograms; optional."""
    from dtypelab.report.result_plots import metric_vs_bits, weight_histograms

    out = store.dir
    results = store.results
    names = list(dict.fromkeys(r.workload for r in results.values()))
    doc = Document(title)
    doc.heading("Reading")
    for name in names:
        doc.text(reading(name, _by(results, name)), lead=True)
    for name in names:
        table = _by(results, name)
        cells = list(dict.fromkeys(c for c, _ in table))
        key = next(iter(table.values())).primary_metric
        doc.heading(f"{name}: the PositTune table ({key})")
        doc.table(*posittune_table(table, cells))
        doc.heading(f"{name}: formats, size and error (seed 002's table; rows without adaptive scaling)")
        doc.table(*seed002_table(table, cells))
        point = _point(table)
        points = [(f"{c}" + ("*" if s == "adaptive" else ""), r.bits_per_weight, r.primary,
                   *((iv.lo, iv.hi) if (iv := interval(r.metrics, key)) else (None, None)))
                  for (c, s), r in table.items() if not (s == "adaptive" and _same(table.get((c, "none")), r))]
        plot = metric_vs_bits(points, key, f"{name}: {key} against stored bits per weight (* adaptive)",
                              out / f"{name}-metric-vs-bits.png", higher_is_better=_higher(table))
        bars = ("95 % intervals as error bars" if key in PROPORTIONS
                else "no interval known; lower is better" if not _higher(table)
                else f"no interval known ({point} is one point)")
        doc.image(plot, f"{name}: {key} against bits per weight (log scale), with the Pareto front and {bars}; "
                        "every point is in the table above")
        wl = next((w for w in workloads if w.name == name), None)
        if wl is not None:
            layers = _some_layers(wl.model())
            hist = weight_histograms(layers, HISTOGRAM_FORMATS, f"{name}: log2|w| per layer",
                                     out / f"{name}-weight-histograms.png")
            doc.image(hist, f"{name}: weight distributions (log2|w|) and each format's high-accuracy region; "
                            "the dashed line is the fullest bin, which PositTune's adaptive scaling moves to 1.0")
    from dtypelab.report.plots import accuracy_plot

    acc = accuracy_plot(ACCURACY_FORMATS, out / "decimal-accuracy.png")
    doc.heading("Formats: decimal accuracy")
    doc.image(acc, "Worst-case decimal accuracy of each format over each interval between adjacent values, "
                   "against log2|x| (the posit and LP papers' figure); each format keeps its colour in every figure")
    if training_plot is not None:
        curves = training_plot(out / "digits-vgg-training.png")
        if curves is not None:
            doc.heading("digits-vgg training")
            doc.image(curves, "digits-vgg: training loss and test accuracy per epoch")
    # benchmarks/calibration_figures.py --out <this run directory>; another workload's as calibration-NAME.json
    for calibration in [out / "calibration.json", *sorted(out.glob("calibration-*.json"))]:
        if calibration.is_file():
            import json

            from dtypelab.report.calibration_report import section

            section(doc, json.loads(calibration.read_text()))
    arith = out / "arith.json"
    if arith.is_file():  # dtypelab arith --out <this run directory>
        import json

        from dtypelab.report import arith_report

        arith_report.section(doc, json.loads(arith.read_text()))
    doc.heading("The seeds' published numbers (their models, which cannot be loaded here)")
    doc.table(["experiment", "published"], [list(row) for row in SEED_POSITTUNE] + [["seed 002 DT", SEED_DT]])
    return doc


def _same(a: Result | None, b: Result) -> bool:
    """The two rows hold one computation (an MX cell: both scalings are one configuration)."""
    return a is not None and a.weights == b.weights and a.metrics == b.metrics


def _some_layers(model: Any, count: int = 3) -> dict[str, Any]:
    """The first, a middle and the last weight of the model's Linear / Conv layers."""
    import torch

    weights = [(n, m.weight) for n, m in model.named_modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d))]
    if not weights:
        return {}
    picks = sorted({0, len(weights) // 2, len(weights) - 1})[:count]
    return {weights[i][0] or "(model)": weights[i][1] for i in picks}


def write(store: ResultStore, workloads: Sequence[Any] = (), title: str = "dtypelab sweep",
          training_plot: Callable[[Path], Path | None] | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into the run directory (atomically)."""
    doc = build(store, workloads, title, training_plot)
    md, html = store.dir / "report.md", store.dir / "report.html"
    atomic_write(md, doc.markdown(relative_to=store.dir))
    atomic_write(html, doc.html())
    return md, html
