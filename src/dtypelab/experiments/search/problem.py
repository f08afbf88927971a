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

from dtypelab.experiments.search.objective import relative_error
from dtypelab.experiments.search.space import pareto_options, weight_options
from dtypelab.model.layers import LAYER_KINDS, kind_of, raw_weight
from dtypelab.model.stats import size_only
from dtypelab.schemes import Scheme, fake_quantize

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
            takes_activations = bool(kind_of(self.model.get_submodule(name)).activation_args)
            rules.append({"match": "re:^" + re.escape(name) + "$", "weights": str(self.options[i][weights[i]]),
                          "activations": None if act is None or not takes_activations else str(act)})
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


def searched_layers(model: nn.Module) -> list[str]:
    """Names of the layers the search configures: every module of a registered layer kind
    (:data:`dtypelab.model.layers.LAYER_KINDS`), except the children of a kind that quantizes its own."""
    names, owned = [], []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in owned):
            continue
        kind = kind_of(module)
        if kind is None:
            continue
        names.append(name)
        if kind.owns_children:
            owned.append(f"{name}." if name else "")
    return names


def layer_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """A layer's weights by their parameter path inside it (``weight``; MultiheadAttention's ``in_proj_weight``
    and ``out_proj.weight``)."""
    paths = {id(m): n for n, m in module.named_modules()}
    return {".".join(filter(None, (paths[id(owner)], attr))): raw_weight(owner, attr).detach()
            for owner, attr in kind_of(module).weights(module)}


@dataclass
class _Call:
    """A layer's FP32 inputs (the first ``keep`` samples) and output on the first search batch."""

    args: tuple
    kwargs: dict
    output: torch.Tensor


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # MultiheadAttention: (output, weights)


def _capture(model: nn.Module, names: list[str], batch: Any, run: Any, keep: int) -> dict[str, _Call]:
    seen: dict[str, _Call] = {}
    handles = []
    for name in names:
        single = len(kind_of(model.get_submodule(name)).activation_args) <= 1
        cut = keep if single else None  # several inputs (attention): their batch dimension differs, keep all

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any, name: str = name,
                 cut: int | None = cut) -> None:
            if name not in seen:
                seen[name] = _Call(tuple(a[:cut].detach().clone() if isinstance(a, torch.Tensor) else a for a in args),
                                   dict(kwargs), _first(output)[:cut].detach().clone())
        handles.append(model.get_submodule(name).register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            run(model, batch)
    finally:
        for h in handles:
            h.remove()
    return seen


def _layer_divergence(module: nn.Module, call: _Call, inputs: tuple, weights: dict[str, torch.Tensor]) -> float:
    """The layer's relative output error with quantized ``weights`` on its (already quantized) FP32 inputs."""
    with torch.no_grad():
        return relative_error(_first(functional_call(module, weights, inputs, call.kwargs)), call.output)


def _quantized_inputs(module: nn.Module, call: _Call, scheme: Scheme | None) -> tuple:
    """The layer's captured inputs with its activation inputs fake-quantized by ``scheme``."""
    count = len(kind_of(module).activation_args)
    if scheme is None or count == 0:
        return call.args
    return tuple(fake_quantize(a, scheme) if i < count and isinstance(a, torch.Tensor) else a
                 for i, a in enumerate(call.args))


def build_problem(workload: Any, space: str | Sequence[str], activations: Sequence[str | None],
                  batches: int = 2, local_samples: int = 16) -> Problem:
    """Load the workload's model, cache FP32 activations, and price and prune every layer's options."""
    model = workload.model()
    calib = list(workload.calibration(batches))[:batches]
    if not calib:
        raise ValueError(f"workload {workload.name!r} gave no calibration batches")
    names = searched_layers(model)
    if not names:
        raise ValueError(f"the model has no layer of a registered kind to search ({', '.join(LAYER_KINDS)})")
    acts = [None if a is None else Scheme.parse(a) for a in activations] or [None]
    cached = _capture(model, names, calib[0], workload.run, local_samples)
    with torch.no_grad():
        f_final = torch.cat([workload.run(model, b).float() for b in calib])
    options, costs, local, numel, pruned_from = [], [], [], [], []
    for name in names:
        module = model.get_submodule(name)
        weights = layer_weights(module)
        call = cached.get(name)
        if call is None:
            raise ValueError(f"layer {name!r} did not run on the first calibration batch, so the search cannot "
                             "measure it")
        cands = weight_options(space, next(iter(weights.values())) if len(weights) == 1 else
                               torch.cat([w.reshape(-1) for w in weights.values()]))
        bits = [float(sum(size_only(w, s).storage_bits for w in weights.values())) for s in cands]
        inputs = [_quantized_inputs(module, call, a) for a in acts]
        div = [[_layer_divergence(module, call, xq, wq) for xq in inputs]
               for wq in ({p: fake_quantize(w, s) for p, w in weights.items()} for s in cands)]
        keep = pareto_options(bits, [min(d) for d in div])
        options.append([cands[k] for k in keep])
        costs.append([bits[k] for k in keep])
        local.append([div[k] for k in keep])
        numel.append(sum(w.numel() for w in weights.values()))
        pruned_from.append(len(cands))
    return Problem(workload, model, calib, names, numel, options, costs, local, acts, f_final, len(calib),
                   pruned_from)
