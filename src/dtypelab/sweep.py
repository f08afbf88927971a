"""The default sweep: workloads × formats × {no scaling, adaptive scaling} on the weights and activations of the
linear and conv layers (the PositTune setup), resumable, written atomically to ``runs/<name>/``.

A cell quantizes a fresh copy of the workload's model with one config, evaluates it, and records the metrics,
the stored bits per weight (scales included), the model's weight size in MB, the mean weight MSE, and the
energy of one forward pass on one sample (``dl.cost.energy``, the lab's table). Cells
already in ``results.json`` are not recomputed, so an interrupted sweep continues where it stopped.

Scaling, per format family:

* posits, logarithmic posits, minifloats — ``none``: the raw format; ``adaptive``: PositTune's histogram rule
  (``log2-hist``), per tensor, recomputed on every forward pass for activations;
* integers, dynamic tree, NF4 — always scaled (absmax); ``adaptive``: the MSE clipping search for the weights
  (activations keep absmax: searching 41 scales on every forward pass made a cell 10x slower);
* MX — the OCP shared exponent in both rows (the spec fixes it): computed once, shown in both.

Example:
    >>> cells = default_cells()
    >>> cells[0].label, cells[0].weights("adaptive")
    ('fp32', None)
    >>> [c for c in cells if c.label == "posit(6,1)"][0].weights("adaptive")
    'posit(6,1)/tensor/log2-hist'
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from dtypelab._io import atomic_write

log = logging.getLogger(__name__)

SCALINGS = ("none", "adaptive")
DEFAULT_WORKLOADS = ("digits-vgg", "minilm")


@dataclass(frozen=True)
class Cell:
    """One column of the sweep: a format and how it is scaled in each scaling row."""

    label: str
    none: str | None  # weight scheme with no (or the format's standard) scaling; None = FP32
    adaptive: str | None
    activation_granularity: str = "tensor"

    def weights(self, scaling: str) -> str | None:
        if scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {scaling!r}; valid: {', '.join(SCALINGS)}")
        return self.none if scaling == "none" else self.adaptive

    def activations(self, scaling: str) -> str | None:
        """The same element format on each layer's input, per tensor (MX: blocks of 32), dynamic scales."""
        w = self.weights(scaling)
        if w is None:
            return None
        from dtypelab.schemes import Scheme

        s = Scheme.parse(w)
        gran = str(s.granularity) if s.scale == "mx" else self.activation_granularity
        scale = "absmax" if s.scale == "mse" else s.scale  # 41 trial scales on every forward pass cost too much
        return str(Scheme(s.format, gran, scale, s.scale_format))

    @property
    def fixed(self) -> bool:
        """Both rows are the same configuration (computed once)."""
        return self.none == self.adaptive


def _family_cell(spec: str) -> Cell:
    return Cell(spec, spec, f"{spec}/tensor/log2-hist")


def _scaled_cell(label: str, fmt: str, gran: str) -> Cell:
    return Cell(label, f"{fmt}/{gran}/absmax", f"{fmt}/{gran}/mse")


def default_cells() -> list[Cell]:
    """The issue's default formats."""
    cells = [Cell("fp32", None, None)]
    cells += [_family_cell(s) for s in ("e4m3", "e5m2", "posit(8,0)", "posit(8,1)", "posit(6,0)", "posit(6,1)",
                                        "lp(8,2,2,0)", "lp(6,1,2,0)")]
    cells += [_scaled_cell(f"dt{n}", f"dt{n}", "channel") for n in range(8, 2, -1)]
    cells += [_scaled_cell("int8/tensor", "int8", "tensor"), _scaled_cell("int8/channel", "int8", "channel"),
              _scaled_cell("nf4/block:64", "nf4", "block:64")]
    cells += [Cell("mxfp8", "mxfp8", "mxfp8"), Cell("mxfp4", "mxfp4", "mxfp4")]
    return cells


def cells_for(formats: Sequence[str] | None) -> list[Cell]:
    """Default cells, or cells from format / scheme specs (a bare format gets the family rule)."""
    if not formats:
        return default_cells()
    known = {c.label: c for c in default_cells()}
    out = []
    for spec in formats:
        if spec in known:
            out.append(known[spec])
        elif "/" in spec:
            out.append(Cell(spec, spec, spec))
        else:
            from dtypelab.formats import fmt

            out.append(_family_cell(str(fmt(spec))))
    return out


def cell_config(cell: Cell, scaling: str, has_embedding: bool = False) -> dict | None:
    """The quantize_model config of a cell; Embedding tables stay FP32 (only linear and conv layers)."""
    w = cell.weights(scaling)
    if w is None:
        return None
    config = {"weights": w, "activations": cell.activations(scaling), "activation_scales": "dynamic"}
    if has_embedding:
        config["layers"] = [{"match": "Embedding", "weights": None}]
    return config


@dataclass
class Result:
    workload: str
    cell: str
    scaling: str
    weights: str | None
    activations: str | None
    primary_metric: str
    metrics: dict[str, float]
    bits_per_weight: float
    size_mb: float
    fp32_size_mb: float
    weight_mse: float
    seconds: float
    energy_pj: float | None = None

    @property
    def key(self) -> str:
        return f"{self.workload}|{self.cell}|{self.scaling}"

    @property
    def primary(self) -> float:
        return self.metrics[self.primary_metric]


def run_cell(workload: Any, cell: Cell, scaling: str, limit: int | None = None) -> Result:
    """Quantize a fresh copy of the workload's model with the cell's config and evaluate it."""
    import torch

    from dtypelab.model import quantize_model

    start = time.perf_counter()
    model = workload.model()
    has_embedding = any(isinstance(m, torch.nn.Embedding) for m in model.modules())
    config = cell_config(cell, scaling, has_embedding)
    if config is None:
        metrics = workload.evaluate(model, limit=limit)
        fp32_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
        bits, size_mb, mse = 32.0, fp32_mb, 0.0
    else:
        report = quantize_model(model, config)
        with torch.no_grad():
            metrics = workload.evaluate(model, limit=limit)
        fp32_mb, size_mb = report.fp32_mb, report.size_mb
        bits, mse = _weight_summary(report, model)
    return Result(workload.name, cell.label, scaling, cell.weights(scaling), cell.activations(scaling),
                  workload.primary_metric, metrics, bits, size_mb, fp32_mb, mse, time.perf_counter() - start,
                  _energy_pj(workload, config))


def _energy_pj(workload: Any, config: dict | None) -> float:
    """Energy (pJ, the lab's table, full accounting) of one forward pass on one calibration sample."""
    from dtypelab.cost import energy

    batch = workload.calibration(1)[0]
    one = {k: v[:1] for k, v in batch.items()} if isinstance(batch, dict) else batch[:1]
    return float(energy(workload.model(), config, example=one).total_pj)


def _weight_summary(report: Any, model: Any) -> tuple[float, float]:
    """(stored bits per quantized weight element, element-weighted mean weight MSE) of a quantized model."""
    from dtypelab.model.layers import kind_of, raw_weight

    quantized = [r for r in report.layers.values() if r.weight_scheme is not None]
    numel = {}
    for r in quantized:
        module = model.get_submodule(r.name)
        numel[r.name] = sum(raw_weight(o, a).numel() for o, a in kind_of(module).weights(module))
    total = max(sum(numel.values()), 1)
    bits = sum(r.weight_bits_per_param * numel[r.name] for r in quantized) / total
    return bits, sum(r.weight_mse * numel[r.name] for r in quantized) / total


class SweepFile(BaseModel):
    """A YAML sweep file: ``name``, ``workloads``, ``formats``, ``scalings``, ``limit`` (all optional).

    >>> SweepFile.model_validate({"formats": ["posit(6,1)"], "scalings": ["adaptive"]}).name
    'default'
    """

    model_config = ConfigDict(extra="forbid")
    name: str = "default"
    workloads: list[str] | None = None
    formats: list[str] | None = None
    scalings: list[str] | None = None
    limit: int | None = None

    @classmethod
    def load(cls, path: str | os.PathLike) -> SweepFile:
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
            return cls.model_validate(data)
        except (OSError, yaml.YAMLError, ValidationError) as err:
            raise ValueError(f"bad sweep file {path}: {err}") from None


class ResultStore:
    """``results.json`` (+ ``results.csv``) in a run directory, rewritten atomically after every cell."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "results.json"
        self.results: dict[str, Result] = {}
        if self.path.exists():
            for row in json.loads(self.path.read_text())["results"]:
                r = Result(**row)
                self.results[r.key] = r

    def add(self, result: Result) -> None:
        self.results[result.key] = result
        rows = [asdict(r) for r in self.results.values()]
        atomic_write(self.path, json.dumps({"results": rows}, indent=1))
        atomic_write(self.dir / "results.csv", to_csv(self.results.values()))


def to_csv(results: Iterable[Result]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["workload", "cell", "scaling", "weights", "activations", "primary_metric", "primary",
                     "bits_per_weight", "size_mb", "fp32_size_mb", "weight_mse", "seconds", "energy_pj", "metrics"])
    for r in results:
        writer.writerow([r.workload, r.cell, r.scaling, r.weights, r.activations, r.primary_metric, r.primary,
                         r.bits_per_weight, r.size_mb, r.fp32_size_mb, r.weight_mse, r.seconds, r.energy_pj,
                         json.dumps(r.metrics)])
    return buf.getvalue()


def sweep(name: str = "default", workloads: Sequence[str | Any] = DEFAULT_WORKLOADS,
          formats: Sequence[str] | None = None, scalings: Sequence[str] = SCALINGS,
          runs_dir: str | os.PathLike = "runs", limit: int | None = None, progress: bool = True) -> ResultStore:
    """Run (or continue) the sweep into ``runs_dir/name``; returns the store of all results."""
    from tqdm import tqdm

    from dtypelab import workloads as registry

    for s in scalings:
        if s not in SCALINGS:
            raise ValueError(f"unknown scaling {s!r}; valid: {', '.join(SCALINGS)}")
    loaded = [registry.get(w) if isinstance(w, str) else w for w in workloads]
    cells = cells_for(formats)
    store = ResultStore(Path(runs_dir) / name)
    todo = [(w, c, s) for w in loaded for c in cells for s in scalings]
    bar = tqdm(todo, desc=f"sweep {name}", disable=not progress, unit="cell")
    for wl, cell, scaling in bar:
        bar.set_postfix_str(f"{wl.name} {cell.label} {scaling}")
        key = f"{wl.name}|{cell.label}|{scaling}"
        if key in store.results:
            continue
        twin = f"{wl.name}|{cell.label}|{SCALINGS[0] if scaling == SCALINGS[1] else SCALINGS[1]}"
        if cell.fixed and twin in store.results:  # both rows are one configuration
            store.add(Result(**{**asdict(store.results[twin]), "scaling": scaling}))
            continue
        store.add(run_cell(wl, cell, scaling, limit))
    return store
