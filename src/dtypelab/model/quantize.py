"""Quantize a PyTorch model in place, and give it back bit for bit.

:func:`quantize_model` resolves a config into per-layer plans (:func:`dtypelab.model.config.resolve`), then

* **weights** get a parametrization (``torch.nn.utils.parametrize``) computing ``fake_quantize(W, scheme)``
  from the current weight on every access — so the model still trains (straight-through gradient: QAT),
  saves and loads (``parametrizations.weight.original``), and tied weights stay one tensor;
* **activations** (the inputs of those layers) get a forward pre-hook computing ``fake_quantize(x, scheme,
  scales)`` with static scales calibrated once, or dynamic ones recomputed from every input
  (``activation_scales: dynamic`` — PositTune's per-forward histogram);
* ``bias: int32`` rounds a bias to the accumulator grid ``s_x * s_w`` (the integer-only path's INT32 bias);
* weights with a method that rounds once (``weights: {scheme: ..., method: gptq}``,
  :mod:`dtypelab.model.methods`) are rounded at quantization from the layer's calibration inputs (gathered in
  the same pass as the activations') and get a :class:`RoundedWeight` parametrization returning that result
  while the weight is unchanged (round to nearest under the same fixed scales once it changes, e.g. in
  training). Their report figures are those of the rounded weight against the original.
* ``equalize: smoothquant:ALPHA | awq`` (:mod:`dtypelab.model.equalize`): per input channel scales ``s`` from
  the calibration inputs; a forward pre-hook divides the layer's input by ``s`` (before its activation
  quantizer, whose static scales are calibrated on ``x / s``) and an :class:`Equalized` parametrization
  multiplies the weight's columns by ``s`` before its rounding, so the FP32 function is unchanged.

Calibration runs the batches through the model *before anything is changed* (observer hooks only, eval mode,
no grad), so a batch of the wrong shape is an error that leaves the model as it was; so is any failure
part-way through (what was attached is taken off again).

Quantizing a model that is already quantized restores it first: quantizing twice is quantizing once (with the
second config). :func:`restore` takes everything off: the same Parameter objects, the same state_dict (keys in
the same order), the same outputs, bit for bit.

Without grad (inference), a weight's fake-quantized value is cached until the weight changes (its bits are
compared with a copy on every use, so in-place edits through ``.data`` are seen too); the cache holds one copy
and one quantized copy of each weight.

Example:
    >>> import torch, dtypelab as dl
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> x = torch.randn(32, 8)
    >>> before = model(x)
    >>> report = dl.quantize_model(model, {"weights": "int4/channel/absmax", "activations": "int8/tensor/pow2"},
    ...                            calibration=[x])
    >>> report.layers["0"].weight_bits_per_param
    8.0
    >>> bool((model(x) - before).abs().max() > 0)
    True
    >>> _ = dl.restore(model)
    >>> torch.equal(model(x), before)
    True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from dtypelab.model.config import LayerPlan, QuantConfig, resolve
from dtypelab.model.equalize import equalizer
from dtypelab.model.fold import Transform, find_hosts, rotation
from dtypelab.model.gptq import element_scales
from dtypelab.model.layers import kind_of, raw_weight
from dtypelab.model.methods import TRANSPOSED, weight_method
from dtypelab.model.report import LayerReport, QuantReport
from dtypelab.model.stats import TensorStats, size_only, tensor_stats
from dtypelab.schemes import PerAxis, PerTensor, Scheme, fake_quantize

log = logging.getLogger(__name__)

STATE_ATTR = "_dtypelab_quant"
BACKWARD_ATTR = "_dtypelab_backward"  # where dtypelab.model.backward keeps its hooks, which restore takes off too
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
Forward = Callable[[nn.Module, Any], Any]


# ---- the pieces attached to a model ------------------------------------------------------------------------------


class WeightFakeQuant(nn.Module):
    """Parametrization ``W -> fake_quantize(W, scheme)`` (scales from the current W; straight-through gradient).

    Example:
        >>> import torch
        >>> from dtypelab.schemes import Scheme
        >>> WeightFakeQuant(Scheme.parse("int4/tensor/absmax"))(torch.tensor([0.3, -7.0])).tolist()
        [0.0, -7.0]
    """

    def __init__(self, scheme: Scheme) -> None:
        super().__init__()
        self.scheme = scheme
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # (w, copy of w, output)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and w.requires_grad:
            self._cache = None
            return fake_quantize(w, self.scheme)
        c = self._cache
        if c is not None and c[0] is w and _same_bits(w, c[1]):
            return c[2]
        out = fake_quantize(w.detach(), self.scheme)  # no graph: exactly Q(w), not w + (Q(w) - w)
        self.prime(w, out)
        return out

    def prime(self, w: torch.Tensor, out: torch.Tensor) -> None:
        """Cache ``out`` (which must equal ``fake_quantize(w, self.scheme)``) for ``w`` as it is now."""
        self._cache = (w, w.detach().clone(), out)

    def extra_repr(self) -> str:
        return str(self.scheme)


_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same_bits(w: torch.Tensor, copy: torch.Tensor) -> bool:
    """Whether ``w`` still holds exactly the bits of ``copy``: the cache's check. A weight's version counter
    misses in-place edits through ``.data``, so the contents are compared (NaN and -0 included)."""
    if w.shape != copy.shape or w.dtype != copy.dtype or w.device != copy.device:
        return False
    a, b = w.detach().view(_INT_OF_SIZE[w.element_size()]), copy.view(_INT_OF_SIZE[w.element_size()])
    if w.device.type == "cpu":  # numpy's compare is many times faster than torch.equal on the CPU
        return bool(np.array_equal(a.numpy(), b.numpy()))
    return torch.equal(a, b)


class RoundedWeight(nn.Module):
    """Parametrization returning a weight rounded once (by GPTQ, say) while the weight holds the bits it was
    rounded from; once it changes (training), ``fake_quantize(W, scheme, scales)`` with the scales fixed from
    the original weight. Straight-through gradient. Holds no buffers: the state_dict is that of round to nearest.

    Example:
        >>> import torch
        >>> from dtypelab.schemes import Scheme
        >>> w = torch.tensor([0.3, -7.0])
        >>> p = RoundedWeight(Scheme.parse("int4/tensor/absmax"), w, torch.tensor([1.0, -7.0]), torch.ones(1))
        >>> p(w).tolist(), p(torch.tensor([0.6, 2.0])).tolist()
        ([1.0, -7.0], [1.0, 2.0])
    """

    def __init__(self, scheme: Scheme, source: torch.Tensor, rounded: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__()
        self.scheme = scheme
        self.source = source.detach().clone()
        self.rounded = rounded.detach()
        self.scales = scales.detach()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if _same_bits(w, self.source.to(w.device)):
            out = self.rounded.to(w.device)
        else:
            out = fake_quantize(w.detach(), self.scheme, self.scales.to(w.device))
        return w + (out - w).detach() if torch.is_grad_enabled() and w.requires_grad else out

    def extra_repr(self) -> str:
        return f"{self.scheme}, rounded once"


class Transformed(nn.Module):
    """Parametrization ``W -> inner(f_k(... f_1(W)))``: transforms of the stored tensor (an input transform's
    column change, a fold's row change: :mod:`dtypelab.model.fold`), then the layer's own weight
    parametrization ``inner`` (None: FP32). Without grad the result is cached until the tensor's bits change.

    Example:
        >>> import torch
        >>> Transformed([lambda w: w * 2], None)(torch.tensor([[1.0, 1.5]])).tolist()
        [[2.0, 3.0]]
    """

    def __init__(self, transforms: list[Callable[[torch.Tensor], torch.Tensor]], inner: nn.Module | None,
                 text: str = "") -> None:
        super().__init__()
        self.transforms = list(transforms)
        self.inner = inner
        self.text = text
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None  # (copy of w, output)

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """The transforms alone (what ``inner`` rounds)."""
        for f in self.transforms:
            w = f(w)
        return w

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        grad = torch.is_grad_enabled() and w.requires_grad
        if not grad and self._cache is not None and _same_bits(w, self._cache[0]):
            return self._cache[1]
        ws = self.apply(w)
        out = ws if self.inner is None else self.inner(ws)
        self._cache = None if grad else (w.detach().clone(), out)
        return out

    def extra_repr(self) -> str:
        return self.text


class Equalized(Transformed):
    """Parametrization ``W -> inner(W · diag(s))``: the weight's columns (input channels) times ``s``, then
    the layer's own weight parametrization ``inner`` (None: FP32).

    Example:
        >>> import torch
        >>> Equalized(torch.tensor([2.0, 0.5]), None)(torch.tensor([[1.0, 1.0]])).tolist()
        [[2.0, 0.5]]
    """

    def __init__(self, scales: torch.Tensor, inner: nn.Module | None,
                 before: list[Callable[[torch.Tensor], torch.Tensor]] = (), transposed: bool = False) -> None:
        self_scales = scales.detach()
        super().__init__([*before, Transform(scales=self_scales, transposed=transposed).weight], inner,
                         f"{self_scales.numel()} input channel scales")
        self.scales = self_scales


class BiasOnAccumulatorGrid(nn.Module):
    """Parametrization rounding a bias to the accumulator grid ``s_x * s_w`` (INT32, ties to even), with a
    straight-through gradient. ``s_w`` comes from the layer's current weight (per output channel or one)."""

    def __init__(self, weight_owner: nn.Module, weight_attr: str, weight_scheme: Scheme,
                 act_scale: torch.Tensor) -> None:
        super().__init__()
        self._weight_ref = [weight_owner, weight_attr]  # a list: not registered as a submodule
        self.weight_scheme = weight_scheme
        self.act_scale = float(act_scale.reshape(()))

    def accumulator_scale(self) -> torch.Tensor:
        """``s_x * s_w`` as float64, one value or one per output channel."""
        w = raw_weight(*self._weight_ref)
        sw = self.weight_scheme.compute_scales(w.detach()).reshape(-1)
        return sw.to(torch.float64) * self.act_scale

    def forward(self, b: torch.Tensor) -> torch.Tensor:
        s = self.accumulator_scale().to(b.device)
        q = (torch.round(b.detach().double() / s).clamp(INT32_MIN, INT32_MAX) * s).to(b.dtype)
        return b + (q - b).detach() if torch.is_grad_enabled() and b.requires_grad else q


class InputHook:
    """Base of the forward pre-hooks (``with_kwargs=True``) that transform a layer's floating-point activation
    inputs (:meth:`transform`); inputs that are one object stay one object."""

    arg_names: tuple[str, ...]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        args, kwargs = list(args), dict(kwargs)
        done: dict[int, Any] = {}

        def once(x: Any) -> Any:
            if id(x) not in done:
                done[id(x)] = self.transform(x) if isinstance(x, torch.Tensor) and x.is_floating_point() else x
            return done[id(x)]

        for i, name in enumerate(self.arg_names):
            if i < len(args):
                args[i] = once(args[i])
            elif name in kwargs:
                kwargs[name] = once(kwargs[name])
        return tuple(args), kwargs


class InputTransform(InputHook):
    """Forward pre-hook applying a :class:`dtypelab.model.fold.Transform` to a layer's activation inputs
    (``x / s`` or ``x R`` along the last axis): the explicit path of an input transform that did not fold.

    Example:
        >>> import torch
        >>> from dtypelab.model.fold import Transform
        >>> h = InputTransform(Transform(rotation=torch.tensor([[0.0, 1.0], [1.0, 0.0]])), ("input",))
        >>> h(None, (torch.tensor([[1.0, 2.0]]),), {})[0][0].tolist()
        [[2.0, 1.0]]
    """

    def __init__(self, transform: Transform, arg_names: tuple[str, ...]) -> None:
        self.transform_ = transform
        self.arg_names = arg_names

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform_.input(x)


class InputScale(InputTransform):
    """Forward pre-hook dividing a layer's activation inputs by per-channel scales (along the last axis).

    Example:
        >>> import torch
        >>> InputScale(torch.tensor([2.0, 4.0]), ("input",))(None, (torch.tensor([[1.0, 1.0]]),), {})[0][0].tolist()
        [[0.5, 0.25]]
    """

    def __init__(self, scales: torch.Tensor, arg_names: tuple[str, ...]) -> None:
        super().__init__(Transform(scales=scales.detach()), arg_names)
        self.scales = scales.detach()


class ActivationQuantizer(InputHook):
    """Forward pre-hook (``with_kwargs=True``) fake-quantizing a layer's activation inputs.

    ``scales`` None means dynamic (recomputed from every input); otherwise the calibrated static scales
    (float64, one or one per channel). Inputs that are one object (self-attention's query is key is value)
    are quantized once and stay one object.
    """

    def __init__(self, scheme: Scheme, arg_names: tuple[str, ...], scales: torch.Tensor | None = None) -> None:
        self.scheme = scheme
        self.arg_names = arg_names
        self.scales = scales
        self._on_device: dict[torch.device, torch.Tensor] = {}

    @property
    def dynamic(self) -> bool:
        return self.scales is None

    def quantize(self, x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return x
        scales = None
        if self.scales is not None:
            scales = self._on_device.get(x.device)
            if scales is None:
                scales = self._on_device[x.device] = self.scales.to(x.device)
        return fake_quantize(x, self.scheme, scales)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)


@dataclass
class _WeightPart:
    owner: nn.Module
    attr: str
    parametrization: nn.Module


@dataclass
class QuantState:
    """What :func:`quantize_model` attached to a model (kept on it, so :func:`restore` can take it off)."""

    config: QuantConfig
    plans: dict[str, LayerPlan]
    weights: list[_WeightPart] = field(default_factory=list)
    activations: dict[str, ActivationQuantizer] = field(default_factory=dict)
    input_scales: dict[str, InputTransform] = field(default_factory=dict)  # run before the activation quantizers
    folds: dict[str, str] = field(default_factory=dict)  # layer -> the op its input transform is folded into
    report: QuantReport | None = None
    arith: Any = None  # dtypelab.arith.ops.ArithState: simulated arithmetic, attached last
    _handles: list[Any] = field(default_factory=list)
    _attached: list[_WeightPart] = field(default_factory=list)
    _param_order: dict[int, tuple[nn.Module, list[str]]] = field(default_factory=dict)

    def attach(self, model: nn.Module) -> None:
        """Register parametrizations and hooks; on failure, take off what was attached and re-raise."""
        try:
            for part in self.weights:
                self._param_order.setdefault(id(part.owner), (part.owner, list(part.owner._parameters)))
                parametrize.register_parametrization(part.owner, part.attr, part.parametrization, unsafe=True)
                self._attached.append(part)
            for name, h in self.input_scales.items():
                self._handles.append(self.plans[name].module.register_forward_pre_hook(h, with_kwargs=True))
            for name, q in self.activations.items():
                self._handles.append(self.plans[name].module.register_forward_pre_hook(q, with_kwargs=True))
            if self.arith is not None:
                self.arith.attach(model)
            model.__dict__[STATE_ATTR] = self
        except BaseException:
            self.detach(model)
            raise

    def detach(self, model: nn.Module) -> None:
        """Take off everything :meth:`attach` put on, restoring parameter order."""
        if self.arith is not None:
            self.arith.detach(model)
        for h in reversed(self._handles):
            h.remove()
        self._handles.clear()
        for part in reversed(self._attached):
            plist = part.owner.parametrizations[part.attr]
            if len(plist) == 1:
                _own_class(part.owner)
                parametrize.remove_parametrizations(part.owner, part.attr, leave_parametrized=False)
            else:  # someone else's parametrizations come first: drop only ours
                idx = next(i for i, p in enumerate(plist) if p is part.parametrization)
                del plist[idx]
        self._attached.clear()
        for owner, order in self._param_order.values():
            params = owner._parameters
            if list(params) != order and set(params) == set(order):
                items = {k: params[k] for k in order}
                params.clear()
                params.update(items)
        self._param_order.clear()
        if model.__dict__.get(STATE_ATTR) is self:
            del model.__dict__[STATE_ATTR]


def _own_class(module: nn.Module) -> None:
    """Give a parametrized module a class of its own before a parametrization comes off.

    torch makes one ``Parametrized<Cls>`` class per module and removing a parametrization deletes its property
    from that class; ``copy.deepcopy`` shares the class between the copies, so restoring one copy would break the
    others. A fresh class with the same bases and members keeps every copy independent.
    """
    cls = type(module)
    members = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    module.__class__ = type(cls.__name__, cls.__bases__, members)


def quant_state(model: nn.Module) -> QuantState | None:
    """The state :func:`quantize_model` left on ``model``, or None if it is not quantized."""
    return model.__dict__.get(STATE_ATTR)


# ---- calibration -------------------------------------------------------------------------------------------------


def default_forward(model: nn.Module, batch: Any) -> Any:
    """``model(**batch)`` for a mapping (e.g. a tokenizer's output), else ``model(batch)``."""
    if isinstance(batch, Mapping):
        return model(**batch)
    return model(batch)


def _observe(plans: dict[str, LayerPlan], store: dict[str, list[torch.Tensor]]) -> list[Any]:
    handles = []
    for name, plan in plans.items():
        if plan.activation is None and not plan.needs_inputs:
            continue
        arg_names = kind_of(plan.module).activation_args

        def hook(module: nn.Module, args: tuple, kwargs: dict, name: str = name,
                 arg_names: tuple[str, ...] = arg_names) -> None:
            seen: set[int] = set()
            for i, a in enumerate(arg_names):
                x = args[i] if i < len(args) else kwargs.get(a)
                if isinstance(x, torch.Tensor) and x.is_floating_point() and id(x) not in seen:
                    seen.add(id(x))
                    store.setdefault(name, []).append(x.detach().clone())

        handles.append(plan.module.register_forward_pre_hook(hook, with_kwargs=True))
    return handles


def _calibrate(model: nn.Module, plans: dict[str, LayerPlan], calibration: Iterable[Any],
               forward: Forward) -> dict[str, list[torch.Tensor]]:
    """Run the batches through the unchanged model and keep every observed activation input."""
    from tqdm.auto import tqdm

    store: dict[str, list[torch.Tensor]] = {}
    training = {m: m.training for m in model.modules()}
    handles = _observe(plans, store)
    n = 0
    try:
        model.eval()
        with torch.no_grad():
            for n, batch in enumerate(tqdm(calibration, desc="calibrating", disable=None, leave=False), 1):
                try:
                    forward(model, batch)
                except Exception as e:
                    raise ValueError(f"calibration batch {n - 1} could not run through the model "
                                     f"({type(e).__name__}: {e}); check the batch shape, or pass forward=") from e
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.training = flag
    if n == 0:
        raise ValueError("calibration holds no batches")
    return store


def _observation_view(xs: list[torch.Tensor], scheme: Scheme, layer: str) -> tuple[torch.Tensor, Scheme]:
    """All observed inputs as one tensor, and the scheme that gives the layer's static scales from it."""
    g = scheme.granularity
    if isinstance(g, PerTensor):
        return torch.cat([x.reshape(-1) for x in xs]), scheme
    # channel:AXIS — one scale per index along AXIS of every input: rows [N, C]
    cols = []
    for x in xs:
        if not -x.dim() <= g.axis < x.dim():
            raise ValueError(f"layer {layer!r}: activation granularity {g} needs inputs with axis {g.axis}, "
                             f"got shape {tuple(x.shape)}")
        cols.append(x.movedim(g.axis, -1).reshape(-1, x.shape[g.axis]))
    if len({c.shape[1] for c in cols}) != 1:
        raise ValueError(f"layer {layer!r}: inputs differ in size along axis {g.axis} "
                         f"({sorted({c.shape[1] for c in cols})}), so one static scale per channel is undefined")
    return torch.cat(cols), Scheme(scheme.format, PerAxis(1), scheme.rule, scheme.storage, scheme.rounding)


# ---- building, reporting -----------------------------------------------------------------------------------------


def _rounded_stats(w: torch.Tensor, part: RoundedWeight) -> TensorStats:
    """Statistics of a weight rounded once: error and energy against the original, saturation (|w / s| past
    the max) and flushing (nonzero w rounded to 0) of the original elements, binades of the stored values."""
    st = tensor_stats(part.rounded, part.scheme, part.scales)
    _, each = element_scales(w.detach(), part.scheme)
    orig = w.detach().to(each.dtype)
    err = (part.rounded.to(each.dtype) - orig).reshape(-1)
    st.sse = float(torch.dot(err, err))
    st.energy = float(torch.dot(orig.reshape(-1), orig.reshape(-1)))
    st.n_saturated = int(((orig / each).abs() > part.scheme.element_range.max).sum())
    st.n_flushed = int(((part.rounded == 0) & (w != 0)).sum())
    return st


def _transforms(plans: dict[str, LayerPlan], observed: dict[str, list[torch.Tensor]]) -> dict[str, Transform]:
    """Each equalized or rotated layer's input transform (Linear, and GPT-2's Conv1D for equalize: one weight)."""
    out = {}
    for name, plan in plans.items():
        w = raw_weight(plan.module, "weight").detach() if plan.equalize or plan.rotate else None
        if plan.equalize is not None:
            flip = kind_of(plan.module).name in TRANSPOSED
            s = equalizer(plan.equalize).scales(w.T if flip else w, observed.get(name, []), plan.weight,
                                                transposed=flip)
            out[name] = Transform(scales=s, transposed=flip)
        elif plan.rotate is not None:
            out[name] = rotation(plan.rotate, w.shape[1])
    return out


def _fold_parts(hosts: dict[str, Any], transforms: dict[str, Transform], plans: dict[str, LayerPlan]
                ) -> tuple[dict[int, list[Callable]], list[_WeightPart]]:
    """Per host tensor (by id) the row change a fold puts on it; and the parts of host tensors no layer plan
    rounds (a LayerNorm's affine, a Linear's bias)."""
    rows: dict[int, list[Callable]] = {}
    parts = []
    for layer, host in hosts.items():
        t = transforms[layer]
        for attr in host.attrs:
            tensor = raw_weight(host.module, attr)
            rows[id(tensor)] = [t.output]
            if attr == "bias" or host.name not in plans:
                parts.append(_WeightPart(host.module, attr, Transformed([t.output], None, f"folded from {layer}")))
    return rows, parts


def _build(model: nn.Module, cfg: QuantConfig, plans: dict[str, LayerPlan],
           observed: dict[str, list[torch.Tensor]], stats: bool) -> tuple[QuantState, dict[str, TensorStats]]:
    state = QuantState(cfg, plans)
    act_stats: dict[str, TensorStats] = {}
    transforms = _transforms(plans, observed)
    hosts = find_hosts(model, transforms, refuse={n for n, p in plans.items() if p.bias == "int32"}) \
        if cfg.fold else {}
    state.folds = {layer: host.name for layer, host in hosts.items()}
    fold_rows, host_parts = _fold_parts(hosts, transforms, plans)
    state.weights.extend(host_parts)
    for name, plan in plans.items():
        kind = kind_of(plan.module)
        method = weight_method(plan.weight_method)
        xs = observed.get(name, [])
        t = transforms.get(name)
        if t is not None:
            xs = [t.input(x) for x in xs]
            if name not in hosts:
                state.input_scales[name] = InputScale(t.scales, kind.activation_args) if t.diagonal \
                    else InputTransform(t, kind.activation_args)
        for owner, attr in kind.weights(plan.module):
            stored = raw_weight(owner, attr)
            raw, rows = stored.detach(), fold_rows.get(id(stored), [])
            ops = [*rows, *([t.weight] if t is not None else [])]
            target = raw
            for f in ops:
                target = f(target)
            part: nn.Module | None = None
            if plan.weight is not None and method.needs_inputs:
                scales, _ = element_scales(target, plan.weight)
                part = RoundedWeight(plan.weight, target, method.round(plan.module, target, plan.weight, xs), scales)
            elif plan.weight is not None:
                part = WeightFakeQuant(plan.weight)
            if t is not None and t.diagonal:
                part = Equalized(t.scales, part, rows, t.transposed)
            elif ops:
                part = Transformed(ops, part, str(t) if t is not None else "folded")
            if part is not None:
                state.weights.append(_WeightPart(owner, attr, part))
        if plan.activation is None:
            continue
        if plan.dynamic:
            q = ActivationQuantizer(plan.activation, kind.activation_args)
            if xs and stats:
                st = TensorStats()
                for x in xs:
                    st += tensor_stats(x, plan.activation)
                act_stats[name] = st
        else:
            obs, obs_scheme = _observation_view(xs, plan.activation, name)
            scales = obs_scheme.compute_scales(obs).reshape(-1).to(torch.float64)
            if isinstance(plan.activation.granularity, PerTensor):
                scales = scales.reshape(())
            q = ActivationQuantizer(plan.activation, kind.activation_args, scales)
            if stats:
                act_stats[name] = tensor_stats(obs, obs_scheme, scales)
        state.activations[name] = q
        if plan.bias == "int32":
            state.weights.append(_WeightPart(plan.module, "bias", BiasOnAccumulatorGrid(
                plan.module, "weight", plan.weight, q.scales)))
    return state, act_stats


def _layer_report(plan: LayerPlan, act: TensorStats | None, counted: set[int], dequantized: dict[int, torch.Tensor],
                  stats: bool, measured: dict[int, tuple[torch.Tensor, RoundedWeight | None]]
                  ) -> tuple[LayerReport, float, float]:
    kind = kind_of(plan.module)
    params = {id(p): p for p in plan.module.parameters()}
    weight_ids = set()
    wst = TensorStats() if plan.weight is not None else None
    shared_bits = 0  # a tied weight is stored once: its bits are counted in the first layer that has it
    for owner, attr in kind.weights(plan.module):
        w = raw_weight(owner, attr)
        weight_ids.add(id(w))
        if wst is not None:
            target, rounded = measured.get(id(w), (w, None))  # what is rounded: W, or W · diag(s) if equalized
            if stats and rounded is not None:
                st = _rounded_stats(target, rounded)
            elif stats:
                st = tensor_stats(target, plan.weight, keep_dequantized=True)
                dequantized[id(w)] = st.dequantized
                st.dequantized = None
            else:
                st = size_only(w, plan.weight)
            if id(w) in counted:
                shared_bits += st.storage_bits
            wst += st
    bits_fp32 = bits_q = 0.0
    for key, p in params.items():
        if key in counted:
            continue
        counted.add(key)
        bits_fp32 += 32 * p.numel()
        if wst is None or key not in weight_ids:
            bits_q += 32 * p.numel()
    if wst is not None:
        bits_q += wst.storage_bits - shared_bits
    n_params = sum(p.numel() for p in params.values())
    return LayerReport.from_stats(plan, n_params, wst, act), bits_fp32, bits_q


def _report(model: nn.Module, plans: dict[str, LayerPlan], act_stats: dict[str, TensorStats],
            dequantized: dict[int, torch.Tensor], stats: bool, state: QuantState) -> QuantReport:
    """The report; ``dequantized`` receives every quantized weight's fake-quantized value (by id of the weight)."""
    counted: set[int] = set()
    layers = {}
    fp32 = q = 0.0
    measured: dict[int, tuple[torch.Tensor, RoundedWeight | None]] = {}
    for part in state.weights:
        w, p = raw_weight(part.owner, part.attr), part.parametrization
        if isinstance(p, Transformed):
            w, p = p.apply(w.detach()), p.inner
            measured[id(raw_weight(part.owner, part.attr))] = (w, p if isinstance(p, RoundedWeight) else None)
        elif isinstance(p, RoundedWeight):
            measured[id(w)] = (w, p)
    for name, plan in plans.items():
        layers[name], b32, bq = _layer_report(plan, act_stats.get(name), counted, dequantized, stats, measured)
        fp32 += b32
        q += bq
    rest = sum(32 * p.numel() for p in _all_parameters(model) if id(p) not in counted)
    return QuantReport(layers=layers, fp32_mb=(fp32 + rest) / 8e6, size_mb=(q + rest) / 8e6)


def _all_parameters(model: nn.Module) -> list[torch.Tensor]:
    """Every stored parameter once (through parametrizations: their originals)."""
    return list({id(p): p for p in model.parameters()}.values())


def _check_model(model: nn.Module, stats: bool, calibration: Iterable[Any] | None) -> None:
    """Refuse models whose layers cannot be quantized here, before anything is changed."""
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(f"model is a TorchScript module ({type(model).__name__}, from torch.jit.script or trace): "
                        "its layers are compiled, so no layer could be quantized; quantize the eager nn.Module, "
                        "then script it")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if stats or calibration is not None:
        meta = next((n for n, p in model.named_parameters() if p.device.type == "meta"), None)
        if meta is not None:
            raise ValueError(f"parameter {meta!r} is on the meta device (a shape without values), so its errors "
                             "cannot be measured nor activations calibrated: pass stats=False and no calibration "
                             "for exact sizes only, or load the weights first (model.to_empty(device=...) and "
                             "load_state_dict)")


# ---- the API -----------------------------------------------------------------------------------------------------


def quantize_model(model: nn.Module, config: QuantConfig | Mapping[str, Any] | str | os.PathLike,
                   calibration: Iterable[Any] | None = None, forward: Forward | None = None,
                   stats: bool = True) -> QuantReport:
    """Quantize ``model`` in place by ``config``; return the per-layer :class:`QuantReport`.

    Args:
        model: any ``nn.Module`` (on any device).
        config: a dict, :class:`QuantConfig`, or a YAML/JSON/TOML path (see :mod:`dtypelab.model.config`).
        calibration: batches to calibrate static activation scales (and to measure activation error with);
            required when some layer has a static activation scheme.
        forward: ``forward(model, batch)`` runs one batch; default ``model(**batch)`` for a mapping, else
            ``model(batch)``.
        stats: measure every weight and calibrated activation (error, saturation, binades, scales). False skips
            that (for search loops): the report then holds schemes, exact sizes and bits per weight only, and the
            weights are quantized on first use instead.

    Raises:
        ValueError: a bad config (before anything is changed), missing calibration, a calibration batch the
            model cannot run, meta-device parameters with ``stats`` or calibration. On any error the model is
            left as it was.
        TypeError: ``model`` is not an ``nn.Module``, or is a TorchScript module (quantize before scripting).

    Example:
        >>> import torch, dtypelab as dl
        >>> m = torch.nn.Sequential(torch.nn.Linear(4, 4))
        >>> r = dl.quantize_model(m, {"weights": "posit(6,1)"})
        >>> r.layers["0"].weight_scheme, type(m[0]).__name__
        ('posit(6,1)/tensor/none', 'ParametrizedLinear')
        >>> _ = dl.restore(m); type(m[0]).__name__
        'Linear'
    """
    _check_model(model, stats, calibration)
    from dtypelab.arith.ops import build as build_arith
    from dtypelab.arith.ops import resolve_ops

    cfg = QuantConfig.coerce(config)
    plans = resolve(model, cfg)
    op_specs = resolve_ops(model, cfg.ops)
    static = [n for n, p in plans.items() if p.needs_inputs]
    if static and calibration is None:
        raise ValueError(f"static activation scales and weight methods such as gptq need calibration batches "
                         f"(layers {static[:5]}{' ...' if len(static) > 5 else ''}); pass calibration=, or set "
                         "activation_scales: dynamic and weights method: rtn")
    previous = quant_state(model)
    if previous is not None:
        previous.detach(model)
    try:
        observed = _calibrate(model, plans, calibration, forward or default_forward) if calibration is not None \
            else {}
        missed = [n for n in static if n not in observed]
        if missed:
            raise ValueError(f"calibration never ran layer(s) {missed[:5]}{' ...' if len(missed) > 5 else ''}, "
                             "which need static activation scales or calibrated weight rounding: check the "
                             "calibration data and forward=, or set activation_scales: dynamic (and weights "
                             "method: rtn) for them")
        state, act_stats = _build(model, cfg, plans, observed, stats)
        state.arith = build_arith(model, plans, op_specs, state.activations)
        del observed
        dequantized: dict[int, torch.Tensor] = {}
        state.report = _report(model, plans, act_stats, dequantized, stats, state)
        state.attach(model)
        for part in state.weights:  # the report computed every quantized weight: cache it for inference
            w = raw_weight(part.owner, part.attr)
            if isinstance(part.parametrization, WeightFakeQuant) and id(w) in dequantized:
                part.parametrization.prime(w, dequantized[id(w)])
        del dequantized
    except BaseException:
        if previous is not None:
            previous.attach(model)
        raise
    log.info("quantized %d of %d layers: %.3f MB (FP32 %.3f MB)", sum(p.quantized for p in plans.values()),
             len(plans), state.report.size_mb, state.report.fp32_mb)
    return state.report


def restore(model: nn.Module) -> nn.Module:
    """Take off what :func:`quantize_model` (and :func:`dtypelab.model.backward.attach_backward`) attached: the
    model comes back bit for bit (parameters, state_dict and its key order, outputs, gradients). A model that is
    not quantized is returned unchanged.

    Example:
        >>> import torch, dtypelab as dl
        >>> m = torch.nn.Linear(3, 3)
        >>> sd = {k: v.clone() for k, v in m.state_dict().items()}
        >>> _ = dl.quantize_model(m, {"weights": "e2m1/channel/absmax"})
        >>> list(m.state_dict())
        ['bias', 'parametrizations.weight.original']
        >>> _ = dl.restore(m)
        >>> list(m.state_dict()) == list(sd) and all(torch.equal(m.state_dict()[k], sd[k]) for k in sd)
        True
    """
    state = quant_state(model)
    if state is not None:
        state.detach(model)
    backward = model.__dict__.get(BACKWARD_ATTR)
    if backward is not None:
        backward.remove()
    return model


__all__ = ["quantize_model", "restore", "quant_state", "QuantState", "WeightFakeQuant", "ActivationQuantizer",
           "BiasOnAccumulatorGrid", "RoundedWeight", "Equalized", "Transformed", "InputScale", "InputTransform",
           "default_forward"]
