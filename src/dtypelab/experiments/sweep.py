"""The default sweep: workloads × formats × {no scaling, adaptive scaling} on the weights and activations of the
linear and conv layers (the PositTune setup), resumable, written atomically to ``runs/<name>/``.

A cell is one :func:`dtypelab.experiments.evaluate` of the workload under the cell's config: the metrics, the
stored bits per weight (scales included), the model's weight size in MB, the mean weight MSE, and the energy
of one forward pass on :func:`~dtypelab.experiments.example_batch`. Rows go to the
:class:`~dtypelab.experiments.store.ResultStore`; a row computed with the same schemes and settings (the
test-item limit, the workload's settings) is not recomputed, so an interrupted sweep continues where it
stopped. The cells run on any executor (``serial``, ``process``, ``ray``).

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

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from dtypelab.experiments.evaluate import evaluate
from dtypelab.experiments.executors import EXECUTORS, make_executor
from dtypelab.experiments.store import Result, ResultStore, run_dir

log = logging.getLogger(__name__)

SCALINGS = ("none", "adaptive")
DEFAULT_WORKLOADS = ("digits-vgg", "minilm", "pydoc-gpt")
MAX_ACTIVATION_TRIALS = 10  # dynamic activation scales searching more trial scales than this use absmax


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
        gran = s.granularity if not s.rule.static else self.activation_granularity
        # 41 trial scales on every forward pass cost too much
        rule = "absmax" if s.rule.trials > MAX_ACTIVATION_TRIALS else s.rule
        return str(Scheme(s.format, gran, rule, s.storage, s.rounding))

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


def cell_config(cell: Cell, scaling: str, has_embedding: bool = False, tied: Sequence[str] = ()) -> dict | None:
    """The quantize_model config of a cell; Embedding tables stay FP32 (only linear and conv layers), and so do
    the layers in ``tied`` (those sharing an Embedding's weight, such as GPT-2's ``lm_head``: a tied weight is
    stored once, in one format)."""
    w = cell.weights(scaling)
    if w is None:
        return None
    config = {"weights": w, "activations": cell.activations(scaling), "activation_scales": "dynamic"}
    if has_embedding:
        config["layers"] = [{"match": "Embedding", "weights": None}, *({"match": n, "weights": None} for n in tied)]
    return config


def tied_to_embeddings(model: Any) -> list[str]:
    """Names of the non-Embedding modules whose weight is an Embedding's weight (tied output layers)."""
    import torch

    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    return [n for n, m in model.named_modules()
            if not isinstance(m, torch.nn.Embedding) and id(getattr(m, "weight", None)) in tables]


def cell_settings(workload: Any, limit: int | None) -> dict[str, Any]:
    """Everything besides the cell's schemes that a cell's result depends on: the test-item limit and the
    workload's own settings (``workload.settings``, e.g. digits-vgg's training settings)."""
    own = getattr(workload, "settings", None)
    if dataclasses.is_dataclass(own) and not isinstance(own, type):
        own = dataclasses.asdict(own)
    elif own is not None and not isinstance(own, dict):
        own = repr(own)
    return {"limit": limit, "workload": own}


def run_cell(workload: Any, cell: Cell, scaling: str, limit: int | None = None) -> Result:
    """Quantize a fresh copy of the workload's model with the cell's config and evaluate it."""
    import torch

    model = workload.model()
    has_embedding = any(isinstance(m, torch.nn.Embedding) for m in model.modules())
    o = evaluate(workload, cell_config(cell, scaling, has_embedding, tied_to_embeddings(model)), limit=limit)
    return Result(workload.name, cell.label, scaling, cell.weights(scaling), cell.activations(scaling),
                  o.primary_metric, o.metrics, o.bits_per_weight, o.size_mb, o.fp32_size_mb, o.weight_mse, o.seconds,
                  o.energy_pj, cell_settings(workload, limit), getattr(workload, "higher_is_better", True))


@dataclass(frozen=True)
class _Task:
    """One cell to compute (picklable, for the process and Ray executors)."""

    workload: Any
    cell: Cell
    scaling: str
    limit: int | None


def _run(task: _Task) -> Result:
    return run_cell(task.workload, task.cell, task.scaling, task.limit)


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


def check_limit(limit: int | None) -> int | None:
    """``limit`` must be None or a positive integer (a negative one would drop items from the end)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive number of test items, got {limit!r}")
    return limit


def sweep(name: str = "default", workloads: Sequence[str | Any] = DEFAULT_WORKLOADS,
          formats: Sequence[str] | None = None, scalings: Sequence[str] = SCALINGS,
          runs_dir: str | os.PathLike = "runs", limit: int | None = None, progress: bool = True,
          executor: str = "serial", workers: int | None = None) -> ResultStore:
    """Run (or continue) the sweep into ``runs_dir/name``; returns the (closed) store of all results.

    A row already stored is reused only when it was computed with the same schemes and settings
    (:func:`cell_settings`); otherwise the cell is computed again and its row replaced. ``executor`` runs the
    cells (``serial``, ``process`` or ``ray``, see :mod:`dtypelab.experiments.executors`); each finished cell
    is stored at once, in order.
    """
    from tqdm import tqdm

    from dtypelab import workloads as registry

    for s in scalings:
        if s not in SCALINGS:
            raise ValueError(f"unknown scaling {s!r}; valid: {', '.join(SCALINGS)}")
    check_limit(limit)
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    directory = run_dir(runs_dir, name)
    loaded = [registry.get(w) if isinstance(w, str) else w for w in workloads]
    cells = cells_for(formats)
    with ResultStore(directory) as store:
        jobs: list[_Task | str] = []  # a cell to compute, or the key of a computed twin row to copy
        for wl in loaded:
            settings = cell_settings(wl, limit)
            chosen = getattr(wl, "sweep_cells", None)
            for cell in cells if formats or chosen is None else [c for c in cells if c.label in chosen]:
                for scaling in scalings:
                    if _current(store.results.get(f"{wl.name}|{cell.label}|{scaling}"), cell, scaling, settings):
                        continue
                    twin = f"{wl.name}|{cell.label}|{_other(scaling)}"
                    if cell.fixed and (_current(store.results.get(twin), cell, scaling, settings) or any(
                            isinstance(j, _Task) and j.workload is wl and j.cell == cell for j in jobs)):
                        jobs.append(twin)  # both rows are one configuration: computed once
                    else:
                        jobs.append(_Task(wl, cell, scaling, limit))
        todo = [j for j in jobs if isinstance(j, _Task)]
        bar = tqdm(jobs, desc=f"sweep {name}", disable=not progress, unit="cell")
        with make_executor(executor if todo else "serial", workers) as run:  # nothing to do: start no workers
            results = run.map(_run, todo)
            for job in bar:
                if isinstance(job, str):
                    store.add(Result(**{**asdict(store.results[job]), "scaling": _other(job.rsplit("|", 1)[1])}))
                    continue
                bar.set_postfix_str(f"{job.workload.name} {job.cell.label} {job.scaling}")
                store.add(next(results))
    return store


def _other(scaling: str) -> str:
    return SCALINGS[0] if scaling == SCALINGS[1] else SCALINGS[1]


def _current(row: Result | None, cell: Cell, scaling: str, settings: dict[str, Any]) -> bool:
    """The stored row is this cell's result under these settings."""
    return (row is not None and row.settings == settings and row.weights == cell.weights(scaling)
            and row.activations == cell.activations(scaling))
