"""The search problem for one workload: layers, candidate schemes, exact costs, cached FP32 activations.

Built once per process (:func:`build_problem`): the FP32 model runs once on the search batches; each
searched layer's FP32 input and output on the first batch are kept (the first ``local_samples`` samples)
so that a layer's divergence under any candidate is computed from the cache, without the FP32 model; the
final representations of all search batches are kept for the global term.

A genome is one option index per layer (weights), then — only when several activation schemes are given —
one per layer for its activations. :meth:`Problem.config` turns a genome into a config for
``dl.quantize_model`` (activation scales are dynamic: recomputed each forward).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from dtypelab.model.stats import size_only
from dtypelab.schemes import Scheme, fake_quantize
from dtypelab.search.objective import relative_error
from dtypelab.search.space import pareto_options, weight_options

SEARCHED_KINDS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
_LOADED: dict[str, tuple] = {}  # per process: problem token -> (model, batches, FP32 representations)


@dataclass
class Problem:
    workload: Any
    model: nn.Module
    batches: list[Any]
    layers: list[str]
    numel: list[int]
    options: list[list[Scheme]]  # kept weight options per layer, cheapest first
    costs: list[list[float]]  # stored bits per kept option
    local: list[list[list[float]]]  # [layer][weight option][activation option] divergence
    activations: list[Scheme | None]
    f_final: torch.Tensor
    n_batches: int
    pruned_from: list[int] = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    _HEAVY = ("model", "batches", "f_final")

    def __getstate__(self) -> dict:
        """Pickles without the model and activations; a worker process reloads them once (see ``loaded``)."""
        return {k: (None if k in self._HEAVY else v) for k, v in self.__dict__.items()}

    def loaded(self) -> Problem:
        """This problem with model, batches and FP32 representations present (rebuilt once per process)."""
        if self.model is not None:
            return self
        if self.token not in _LOADED:
            model = self.workload.model()
            batches = list(self.workload.calibration(self.n_batches))[: self.n_batches]
            with torch.no_grad():
                f_final = torch.cat([self.workload.run(model, b).float() for b in batches])
            _LOADED[self.token] = (model, batches, f_final)
        self.model, self.batches, self.f_final = _LOADED[self.token]
        return self

    @property
    def searches_activations(self) -> bool:
        return len(self.activations) > 1

    def gene_costs(self) -> list[list[float]]:
        costs = [list(c) for c in self.costs]
        if self.searches_activations:
            costs += [[0.0] * len(self.activations) for _ in self.layers]
        return costs

    def split(self, genome: Sequence[int]) -> tuple[Sequence[int], Sequence[int]]:
        n = len(self.layers)
        return genome[:n], (genome[n:] if self.searches_activations else [0] * n)

    def bits_per_weight(self, genome: Sequence[int]) -> float:
        weights, _ = self.split(genome)
        return sum(self.costs[i][g] for i, g in enumerate(weights)) / sum(self.numel)

    def local_terms(self, genome: Sequence[int]) -> list[float]:
        weights, acts = self.split(genome)
        return [self.local[i][w][a] for i, (w, a) in enumerate(zip(weights, acts, strict=True))]

    def config(self, genome: Sequence[int]) -> dict:
        weights, acts = self.split(genome)
        rules = []
        for i, name in enumerate(self.layers):
            act = self.activations[acts[i]]
            is_embedding = isinstance(self.model.get_submodule(name), nn.Embedding)
            rules.append({"match": "re:^" + re.escape(name) + "$", "weights": str(self.options[i][weights[i]]),
                          "activations": None if act is None or is_embedding else str(act)})
        return {"weights": None, "activations": None, "activation_scales": "dynamic", "layers": rules}

    def final_representation(self, genome: Sequence[int]) -> torch.Tensor:
        from dtypelab.model import quantize_model, restore

        self.loaded()
        quantize_model(self.model, self.config(genome), stats=False)
        try:
            with torch.no_grad():
                return torch.cat([self.workload.run(self.model, b).float() for b in self.batches])
        finally:
            restore(self.model)


def _capture(model: nn.Module, names: list[str], batch: Any, run: Any, keep: int) -> dict[str, tuple]:
    seen: dict[str, tuple] = {}
    handles = []
    for name in names:
        def hook(module: nn.Module, args: tuple, output: Any, name: str = name) -> None:
            if name not in seen:
                seen[name] = (args[0][:keep].detach().clone(), output[:keep].detach().clone())
        handles.append(model.get_submodule(name).register_forward_hook(hook))
    try:
        with torch.no_grad():
            run(model, batch)
    finally:
        for h in handles:
            h.remove()
    return seen


def _layer_divergence(module: nn.Module, xq: torch.Tensor, y: torch.Tensor, wq: torch.Tensor) -> float:
    """The layer's relative output error with quantized weights ``wq`` on its (already quantized) FP32 input."""
    with torch.no_grad():
        return relative_error(functional_call(module, {"weight": wq}, (xq,)), y)


def build_problem(workload: Any, space: str | Sequence[str], activations: Sequence[str | None],
                  batches: int = 2, local_samples: int = 16) -> Problem:
    """Load the workload's model, cache FP32 activations, and price and prune every layer's options."""
    model = workload.model()
    calib = list(workload.calibration(batches))[:batches]
    if not calib:
        raise ValueError(f"workload {workload.name!r} gave no calibration batches")
    names = [n for n, m in model.named_modules() if isinstance(m, SEARCHED_KINDS)]
    if not names:
        raise ValueError("the model has no Linear, Conv1d, Conv2d or Embedding layer to search")
    acts = [None if a is None else Scheme.parse(a) for a in activations] or [None]
    cached = _capture(model, names, calib[0], workload.run, local_samples)
    with torch.no_grad():
        f_final = torch.cat([workload.run(model, b).float() for b in calib])
    options, costs, local, numel, pruned_from = [], [], [], [], []
    for name in names:
        module = model.get_submodule(name)
        w = module.weight.detach()
        x, y = cached[name]
        cands = weight_options(space, w)
        bits = [float(size_only(w, s).storage_bits) for s in cands]
        inputs = [x if a is None or isinstance(module, nn.Embedding) else fake_quantize(x, a) for a in acts]
        div = [[_layer_divergence(module, xq, y, wq) for xq in inputs] for wq in (fake_quantize(w, s) for s in cands)]
        keep = pareto_options(bits, [min(d) for d in div])
        options.append([cands[k] for k in keep])
        costs.append([bits[k] for k in keep])
        local.append([div[k] for k in keep])
        numel.append(w.numel())
        pruned_from.append(len(cands))
    return Problem(workload, model, calib, names, numel, options, costs, local, acts, f_final, len(calib),
                   pruned_from)
