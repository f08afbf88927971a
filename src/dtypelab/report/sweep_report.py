"""The sweep report: ``report.md`` and a self-contained ``report.html`` in the run directory.

Sections: a generated reading of the results; per workload the PositTune table (rows no-scaling / adaptive,
columns the formats, cells the primary metric), the seed-002 table (metric, size in MB with every scale,
weight MSE), metric against bits per weight with the Pareto front, and per-layer histograms of log2|w| with
each format's high-accuracy region; the formats' decimal-accuracy curves; the digits-vgg training curves;
and our numbers beside the seeds' published ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from dtypelab._io import atomic_write
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
    """One "point" of the primary metric: 0.01 for a fraction (recall@1 in [0, 1]), else 1 (a percentage)."""
    return 0.01 if all(abs(r.primary) <= 1 for r in table.values()) else 1.0


def _fmt(v: float, point: float = 1.0) -> float:
    return round(v, 2 if point == 1 else 4)


def reading(workload: str, table: dict[tuple[str, str], Result]) -> str:
    """One paragraph on the seeds' findings, generated from this workload's numbers."""
    def metric(cell: str, scaling: str) -> float | None:
        r = table.get((cell, scaling))
        return r.primary if r else None

    any_r = next(iter(table.values()))
    key = any_r.primary_metric
    point = _point(table)
    digits = 2 if point == 1 else 3

    def show(v: float) -> str:
        return f"{v:.{digits}f}"

    parts = []
    fp32 = metric("fp32", "none")
    if fp32 is not None:
        unit = "" if point == 1 else f" (a fraction: a point below is {point})"
        parts.append(f"On {workload}, FP32 scores {key} {show(fp32)}{unit}.")
    p6 = {c: (metric(c, "none"), metric(c, "adaptive")) for c in ("posit(6,0)", "posit(6,1)")}
    p6 = {c: v for c, v in p6.items() if None not in v}
    if p6:
        gains = [f"{c} {show(n)} -> {show(a)}" for c, (n, a) in p6.items()]
        rescued = any(a - n > point for n, a in p6.values())
        parts.append(f"Adaptive scaling {'rescues' if rescued else 'does not visibly change'} 6-bit posits "
                     f"({'; '.join(gains)}).")
        fp8 = [v for v in (metric("e4m3", "none"), metric("e4m3", "adaptive")) if v is not None]
        if fp8:
            best6, best8 = max(a for _, a in p6.values()), max(fp8)
            verdict = "reaches" if best6 >= best8 - point / 2 else "falls short of"
            parts.append(f"The best 6-bit adaptive posit ({show(best6)}) {verdict} FP8 E4M3 quality ({show(best8)}).")
    dts = [(n, metric(f"dt{n}", "none")) for n in range(8, 2, -1) if metric(f"dt{n}", "none") is not None]
    if len(dts) > 1:
        curve = ", ".join(f"DT{n} {show(v)}" for n, v in dts)
        top = dts[0][1]
        broken = next((n for n, v in dts if top - v > point), None)
        shape = (f"it holds within 1 point of DT8 down to {broken + 1} bits and drops below that" if broken
                 else "it stays within 1 point of DT8 at every width")
        parts.append(f"The real dynamic tree is not flat like the seed's defective one: {curve}; {shape}.")
    return " ".join(parts)


def posittune_table(table: dict[tuple[str, str], Result], cells: Sequence[str]) -> tuple[list[str], list[list]]:
    header = ["scaling", *cells]
    rows = []
    point = _point(table)
    for scaling in SCALING_ROWS:
        rows.append([scaling, *(_fmt(table[(c, scaling)].primary, point) if (c, scaling) in table else ""
                                for c in cells)])
    return header, rows


def seed002_table(table: dict[tuple[str, str], Result], cells: Sequence[str]) -> tuple[list[str], list[list]]:
    key = next(iter(table.values())).primary_metric
    header = ["format", "scaling", key, "bits/weight", "size MB", "weight MSE", "energy nJ/sample"]
    rows = []
    point = _point(table)
    for c in cells:
        r = table.get((c, "none"))
        if r:
            energy = "" if r.energy_pj is None else round(r.energy_pj / 1000, 1)
            rows.append([c, "none", _fmt(r.primary, point), round(r.bits_per_weight, 3), round(r.size_mb, 4),
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
        points = [(f"{c}" + ("*" if s == "adaptive" else ""), r.bits_per_weight, r.primary)
                  for (c, s), r in table.items() if not (s == "adaptive" and table.get((c, "none")) == r)]
        plot = metric_vs_bits(points, key, f"{name}: {key} against stored bits per weight (* adaptive)",
                              out / f"{name}-metric-vs-bits.png")
        doc.image(plot, f"{name}: {key} against bits per weight (log scale), with the Pareto front")
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
    doc.image(acc, "Decimal accuracy of each format against log2|x| (the posit and LP papers' figure)")
    if training_plot is not None:
        curves = training_plot(out / "digits-vgg-training.png")
        if curves is not None:
            doc.heading("digits-vgg training")
            doc.image(curves, "digits-vgg: training loss and test accuracy per epoch")
    doc.heading("The seeds' published numbers (their models, which cannot be loaded here)")
    doc.table(["experiment", "published"], [list(row) for row in SEED_POSITTUNE] + [["seed 002 DT", SEED_DT]])
    return doc


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
