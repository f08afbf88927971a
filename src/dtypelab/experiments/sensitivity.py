"""Per-layer sensitivity: what quantizing **only one layer** costs, for every quantizable layer.

For each layer, a config that quantizes that layer alone (its weights by ``scheme``, and its inputs by
``activations`` if given) is applied to a fresh FP32 copy of the workload's model, and three figures are taken:

* ``metric`` and ``drop``: the workload's primary metric with only that layer quantized, and how much worse it
  is than FP32 (``fp32 - metric`` where higher is better, ``metric - fp32`` otherwise: positive is worse);
* ``kl``: the mean ``KL(softmax(y_fp32) || softmax(y_q))`` over the rows of the workload's final
  representation ``run(model, batch)`` (last axis) on the calibration batches (logits for classifiers and LMs;
  for an embedding model, the softmax of its embeddings);
* ``fisher``: the empirical-Fisher estimate of the loss increase, ``1/2 Σ F_ii (Q(w_i) - w_i)²`` over the layer's
  weights, with ``F_ii`` the squared gradient of the cross-entropy of the FP32 model's outputs against its own
  predictions (argmax), averaged over the calibration batches (computed once, on the FP32 model; 0 for a layer
  whose weights the scheme leaves in FP32).

Layers are ranked by ``drop``, then ``kl``. :func:`write` renders the ranked Markdown table, the JSON, and a plot
(``sensitivity.md``, ``sensitivity.json``, ``sensitivity.png``) into a run directory.

Example:
    >>> import torch
    >>> from dtypelab.workloads import load_user
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(64, 8)
    >>> w = load_user(model=lambda: torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(),
    ...               torch.nn.Linear(8, 3)), evaluate=lambda m: 1.0, primary_metric="score", calib=lambda: [x])
    >>> result = sensitivity(w, "int2/channel/absmax")
    >>> [r.layer for r in result.rows] == sorted(["0", "2"], key=lambda n: -result.by_layer[n].kl), \\
    ...     all(r.kl > 0 and r.fisher > 0 for r in result.rows)
    (True, True)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["LayerSensitivity", "SensitivityResult", "sensitivity", "write", "layer_config"]


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's figures (see the module docstring)."""

    layer: str
    kind: str
    params: int
    metric: float
    drop: float
    kl: float
    fisher: float


@dataclass(frozen=True)
class SensitivityResult:
    """The ranked rows (most sensitive first) and what they were measured against."""

    workload: str
    scheme: str
    activations: str | None
    primary_metric: str
    higher_is_better: bool
    fp32_metric: float
    rows: tuple[LayerSensitivity, ...]

    @property
    def by_layer(self) -> dict[str, LayerSensitivity]:
        return {r.layer: r for r in self.rows}

    def ranking(self) -> list[str]:
        """The layer names, most sensitive first (a prior for the search's initial population)."""
        return [r.layer for r in self.rows]

    def table(self) -> str:
        """The ranked Markdown table."""
        from dtypelab._markdown import markdown_table

        header = ["rank", "layer", "kind", "params", self.primary_metric, "drop", "output KL", "Fisher"]
        body = [[i, r.layer, r.kind, r.params, r.metric, r.drop, r.kl, r.fisher] for i, r in enumerate(self.rows, 1)]
        return markdown_table(header, body, numeric=[True, False, False, True, True, True, True, True])

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "rows"}, "rows": [asdict(r) for r in self.rows]}


def layer_config(layer: str, scheme: str, activations: str | None = None) -> dict[str, Any]:
    """The config quantizing only ``layer`` (matched exactly by name).

    Example:
        >>> layer_config("features.0", "int4")
        {'layers': [{'match': 're:features\\\\.0', 'weights': 'int4'}]}
    """
    rule: dict[str, Any] = {"match": "re:" + re.escape(layer), "weights": scheme}
    if activations is not None:
        rule["activations"] = activations
    return {"layers": [rule]}


def _tensor(out: Any) -> Any:
    """The tensor of a model's output: itself, ``.logits``, ``.last_hidden_state`` or the first of a tuple."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    for attr in ("logits", "last_hidden_state"):
        if isinstance(getattr(out, attr, None), torch.Tensor):
            return getattr(out, attr)
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ValueError(f"the workload's output is a {type(out).__name__}, not a tensor (nor logits, "
                     "last_hidden_state or a tuple of tensors): no output KL or Fisher can be taken")


def _rows(y: Any) -> Any:
    """Rows ``[n, classes]`` of an output tensor (its last axis)."""
    return y.reshape(-1, y.shape[-1]) if y.dim() > 1 else y.reshape(1, -1)


def _kl(reference: list[Any], outputs: list[Any]) -> float:
    import torch

    total, n = 0.0, 0
    for a, b in zip(reference, outputs, strict=True):
        p = torch.log_softmax(_rows(a).detach().double(), dim=-1)
        q = torch.log_softmax(_rows(b).detach().double(), dim=-1)
        total += float((p.exp() * (p - q)).sum())
        n += p.shape[0]
    return total / max(n, 1)


def _fisher(workload: Any, batches: list[Any], scheme: Any) -> dict[str, float]:
    """``1/2 Σ F_ii ΔW_i²`` per layer, ``F`` the mean squared gradient over the batches (FP32 model)."""
    import torch

    from dtypelab.model.config import quantizable_layers
    from dtypelab.model.layers import kind_of
    from dtypelab.model.quantize import default_forward
    from dtypelab.schemes import fake_quantize

    model = workload.model()
    refs = {name: kind_of(m).weights(m) for name, m in quantizable_layers(model).items()}
    weights = {id(getattr(o, a)): getattr(o, a) for ws in refs.values() for o, a in ws}
    squares = {k: torch.zeros_like(w) for k, w in weights.items()}
    for p in model.parameters():
        p.requires_grad_(id(p) in weights)
    for batch in batches:
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            logits = _rows(_tensor(default_forward(model, batch)))
            torch.nn.functional.cross_entropy(logits, logits.detach().argmax(dim=-1)).backward()
        for k, w in weights.items():
            if w.grad is not None:
                squares[k] += w.grad.detach().square()
    out = {}
    for name, ws in refs.items():
        total = 0.0
        for o, a in ws:
            w = getattr(o, a).detach()
            dw = fake_quantize(w, scheme) - w
            total += 0.5 * float((squares[id(getattr(o, a))] / len(batches) * dw.square()).sum())
        out[name] = total
    return out


def sensitivity(workload: Any, scheme: str, activations: str | None = None, *, limit: int | None = None,
                batches: int = 2, progress: Callable[[str], None] | None = None) -> SensitivityResult:
    """Measure every quantizable layer of ``workload``'s model quantized alone under ``scheme`` (weights) and
    ``activations`` (its inputs; None: FP32), ranked most sensitive first.

    Args:
        workload: a :class:`dtypelab.workloads.Workload` (or anything with ``model``, ``evaluate``,
            ``calibration``, ``run``, ``name`` and ``primary_metric``).
        scheme: the weight scheme spec.
        activations: the activation scheme spec, or None.
        limit: evaluate the metric on the first ``limit`` test items.
        batches: calibration batches (static activation scales, the output KL and the Fisher estimate).
        progress: called with each layer's name before it is measured.

    Raises:
        ValueError: a scheme that does not parse, a model with no quantizable layer, an output that is not a
            tensor.
    """
    import torch

    from dtypelab.model import quantize_model
    from dtypelab.model.config import QuantConfig, quantizable_layers
    from dtypelab.model.layers import kind_of
    from dtypelab.schemes import Scheme

    weight_scheme = Scheme.parse(scheme)
    QuantConfig.coerce({"weights": scheme, "activations": activations})  # a bad spec fails here, named
    calib = list(workload.calibration(batches))
    model = workload.model()
    layers = quantizable_layers(model)
    if not layers:
        raise ValueError(f"workload {workload.name!r}: its model has no quantizable layer")
    higher = getattr(workload, "higher_is_better", True)
    with torch.no_grad():
        fp32_metric = float(workload.evaluate(model, limit=limit)[workload.primary_metric])
        reference = [_tensor(workload.run(model, b)) for b in calib]
    fisher = _fisher(workload, calib, weight_scheme)
    rows = []
    for name, module in layers.items():
        if progress is not None:
            progress(name)
        m = workload.model()
        quantize_model(m, layer_config(name, scheme, activations), calibration=calib, stats=False)
        with torch.no_grad():
            metric = float(workload.evaluate(m, limit=limit)[workload.primary_metric])
            kl = _kl(reference, [_tensor(workload.run(m, b)) for b in calib])
        drop = fp32_metric - metric if higher else metric - fp32_metric
        rows.append(LayerSensitivity(name, kind_of(module).name, sum(p.numel() for p in module.parameters()),
                                     metric, drop, kl, fisher[name]))
    rows.sort(key=lambda r: (-r.drop, -r.kl, -r.fisher))
    return SensitivityResult(workload.name, str(weight_scheme), activations, workload.primary_metric, higher,
                             fp32_metric, tuple(rows))


def write(result: SensitivityResult, out_dir: str | Path) -> list[Path]:
    """Write ``sensitivity.md`` (the ranked table), ``sensitivity.json`` and ``sensitivity.png`` (the three
    figures per layer, in rank order) into ``out_dir``, atomically; returns the paths."""
    from dtypelab._io import atomic_write
    from dtypelab.report.result_plots import sensitivity_plot

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    acts = f", activations {result.activations}" if result.activations else ""
    md = (f"# Per-layer sensitivity: {result.workload}, weights {result.scheme}{acts}\n\n"
          f"Each layer quantized alone. FP32 {result.primary_metric}: {result.fp32_metric:.6g}; drop > 0 is worse. "
          "Output KL: mean KL(softmax(fp32) || softmax(quantized)) of the final output rows on the calibration "
          "batches. Fisher: 1/2 Σ F (Q(w) - w)², F the squared gradient of the cross-entropy against the FP32 "
          "model's own predictions.\n\n" + result.table() + "\n")
    paths = [atomic_write(out / "sensitivity.md", md),
             atomic_write(out / "sensitivity.json", json.dumps(result.to_dict(), indent=1)),
             sensitivity_plot(result.ranking(), {"metric drop": [r.drop for r in result.rows],
                                                 "output KL": [r.kl for r in result.rows],
                                                 "Fisher estimate": [r.fisher for r in result.rows]},
                              out / "sensitivity.png", title=f"{result.workload}: {result.scheme}{acts}")]
    return paths
