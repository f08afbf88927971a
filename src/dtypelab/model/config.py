"""Quantization configs: which scheme each layer's weights and activations get.

A config is a dict, a YAML/JSON/TOML file, or a :class:`QuantConfig`, validated by pydantic::

    weights: posit(6,1)/channel/log2-hist     # default for every quantizable layer (null: keep FP32)
                                              # or {scheme: int4/channel/absmax, method: gptq}
    activations: posit(8,1)                   # the inputs of those layers
    activation_scales: static                 # static (calibrated) | dynamic (recomputed every forward)
    bias: float                               # float | int32 (on the accumulator grid s_x * s_w)
    layers:                                   # overrides, applied in order; a later rule wins
      - match: "re:.*attention.*"             # glob on the module name, re:REGEX, or a type (Linear, ...)
        activations: null
      - match: Embedding
        weights: int8/channel/absmax
      - match: "decoder.*"
        weights: {scheme: "posit(4,1)/channel/absmax", method: gptq}

``weights`` is a scheme, or a mapping ``{scheme: SCHEME, method: METHOD}`` with a weight rounding method of
:data:`dtypelab.model.methods.WEIGHT_METHODS` (``rtn``, the default: round to nearest; ``gptq``). The mapping
is read into ``weights`` (the scheme) and ``weight_method``, which may also be given as a key of its own; a
rule's mapping without ``scheme`` changes only the method. ``to_dict`` writes ``weight_method`` only where it
is not ``rtn``, so existing configs read and write as before.

``equalize: smoothquant[:ALPHA] | awq[:ROWS]`` (a layer option, default null; Linear layers) divides the layer's input
channels by calibrated scales and multiplies its weight's columns by them (:mod:`dtypelab.model.equalize`); it
is written by ``to_dict`` only where set.

``rotate: hadamard[:SEED]`` (a layer option, default null; Linear layers; not with ``equalize`` on the same
layer) rotates the layer's input by a fixed random Hadamard matrix and its weight by the same
(:mod:`dtypelab.model.fold`). ``fold: true`` (top level, the default) folds an equalization or rotation into the
op before the layer where that is exact, else it is an explicit transform of the input; ``fold: false`` always
uses the explicit one. Both are written by ``to_dict`` only where not the default.

``backward: {error: SCHEME, weight_grad: SCHEME, saved: SCHEME}`` (a layer option, default null: the straight-through
FP32 backward) rounds, in the backward pass, the gradient w.r.t. the layer's input (the error it passes back), the
gradient w.r.t. its weights, and the activations it saves for the backward (its input, stored in that format), each
by its own scheme and rounding (``e5m2/tensor/absmax//sr``); :func:`dtypelab.model.backward.attach_backward` attaches
it. A rule's ``backward`` changes only the keys it gives (``backward: null`` clears them all); ``to_dict`` writes it
only where set.

``compute:`` (top level: every Linear / Conv1d / Conv2d / GPT-2 Conv1D layer -- a model with none, or with a
Conv1D that is not a registered kind, is a ``ValueError``; or in a layer rule, where a layer of another kind is
a ``ValueError``) simulates the layer's arithmetic:
``{product, accumulator, chunk, group, order, overflow, promote, output}`` (:mod:`dtypelab.arith.compute`;
``accumulator: bf16``, ``quire``, ``align:13`` with ``chunk: 128``, ``int32`` ...). ``ops:`` is a list of
``{match, output, softmax, residual, compute, operands}`` rules over *any* module (LayerNorm, GELU, the Q·Kᵀ
and A·V of BERT and GPT-2 self-attention and of MultiheadAttention, BERT's residual adds:
:mod:`dtypelab.arith.ops`). Both are written by ``to_dict`` only where set.

Quantizable layers are the registered kinds (:data:`dtypelab.model.layers.LAYER_KINDS`): Linear, Conv1d, Conv2d,
Embedding (weights only: its inputs are indices) and MultiheadAttention (packed ``in_proj_weight`` and
``out_proj.weight``; its activations are query, key and value). :func:`resolve` turns a config into one
:class:`LayerPlan` per such layer, and raises ``ValueError`` naming what is wrong (a rule that matches nothing,
an unknown type, a scheme that does not parse) before anything is changed.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> plans = resolve(model, {"weights": "int8/channel/absmax",
    ...                         "layers": [{"match": "2", "weights": "posit(6,1)"}]})
    >>> {name: str(p.weight) for name, p in plans.items()}
    {'0': 'int8/channel/absmax', '2': 'posit(6,1)/tensor/none'}
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

from dtypelab._io import atomic_write
from dtypelab._patterns import check_match
from dtypelab.arith.compute import Compute
from dtypelab.arith.rules import COMPUTE_KINDS, OpRule, compute_spec
from dtypelab.model.equalize import equalizer
from dtypelab.model.fold import rotation_spec
from dtypelab.model.layers import LAYER_KINDS, kind_of, module_type, raw_weight
from dtypelab.model.methods import TRANSPOSED, weight_method
from dtypelab.schemes import PerAxis, PerTensor, Scheme

FP32_WORDS = ("fp32", "float32", "none", "null", "float")
ActivationScales = Literal["static", "dynamic"]
Bias = Literal["float", "int32"]


def _scheme_spec(value: Any) -> str | None:
    """Canonical scheme string (or None = keep FP32); raises ValueError naming the bad spec."""
    if value is None:
        return None
    if isinstance(value, Scheme):
        return str(value)
    if isinstance(value, str) and value.strip().lower() in FP32_WORDS:
        return None
    try:
        return str(Scheme.parse(value))
    except (ValueError, TypeError) as e:
        raise ValueError(f"scheme {value!r} does not parse: {e}. A scheme is FORMAT[/GRANULARITY[/SCALE]] such as "
                         f"'posit(6,1)/channel/log2-hist', or null to keep FP32") from None


def _weights_mapping(data: Any) -> Any:
    """Split ``weights: {scheme: ..., method: ...}`` into ``weights`` and ``weight_method``."""
    if not isinstance(data, Mapping) or not isinstance(data.get("weights"), Mapping):
        return data
    data = dict(data)
    spec = dict(data.pop("weights"))
    unknown = sorted(set(spec) - {"scheme", "method"})
    if unknown:
        raise ValueError(f"weights mapping: unknown key(s) {unknown}; valid: scheme, method")
    if "scheme" in spec:
        data["weights"] = spec["scheme"]
    if "method" in spec:
        if "weight_method" in data and data["weight_method"] != spec["method"]:
            raise ValueError(f"weights.method {spec['method']!r} and weight_method {data['weight_method']!r} "
                             "disagree: give the method once")
        data["weight_method"] = spec["method"]
    return data


def _method_name(v: Any) -> str | None:
    return None if v is None else weight_method(v).name


def _equalize_spec(v: Any) -> str | None:
    return None if v is None else str(equalizer(v))


class BackwardSpec(BaseModel):
    """The schemes of a layer's backward pass (None: FP32): ``error`` (gradient w.r.t. the layer's input),
    ``weight_grad`` (w.r.t. its weights), ``saved`` (the input it saves for the backward)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error: str | None = None
    weight_grad: str | None = None
    saved: str | None = None

    @field_validator("error", "weight_grad", "saved", mode="before")
    @classmethod
    def _schemes(cls, v: Any) -> str | None:
        return _scheme_spec(v)

    @property
    def active(self) -> bool:
        """Whether any part of the backward is rounded."""
        return any(v is not None for v in (self.error, self.weight_grad, self.saved))


def _merge_backward(base: BackwardSpec | None, rule: LayerRule) -> BackwardSpec | None:
    """``base`` with the keys a rule's ``backward`` sets (``backward: null`` clears them)."""
    if rule.backward is None:
        return None
    given = {k: getattr(rule.backward, k) for k in rule.backward.model_fields_set}
    return BackwardSpec(**{**(base.model_dump() if base is not None else {}), **given})


def _rotate_spec(v: Any) -> str | None:
    return None if v is None else rotation_spec(v)


class _LayerOptions(BaseModel):
    """The options a config gives every layer and a rule overrides, with their shared validators (each subclass
    declares the fields, with its defaults)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _split_weights(cls, data: Any) -> Any:
        return _weights_mapping(data)

    @field_validator("weights", "activations", mode="before", check_fields=False)
    @classmethod
    def _schemes(cls, v: Any) -> str | None:
        return _scheme_spec(v)

    @field_validator("compute", mode="before", check_fields=False)
    @classmethod
    def _compute(cls, v: Any) -> dict[str, Any] | None:
        return compute_spec(v)

    @field_validator("equalize", mode="before", check_fields=False)
    @classmethod
    def _equalize(cls, v: Any) -> str | None:
        return _equalize_spec(v)

    @field_validator("rotate", mode="before", check_fields=False)
    @classmethod
    def _rotate(cls, v: Any) -> str | None:
        return _rotate_spec(v)


class LayerRule(_LayerOptions):
    """An override for the layers a pattern matches; only the fields given override."""

    match: str
    weights: str | None = None
    activations: str | None = None
    activation_scales: ActivationScales | None = None
    bias: Bias | None = None
    weight_method: str | None = None
    equalize: str | None = None
    backward: BackwardSpec | None = None
    rotate: str | None = None
    compute: dict[str, Any] | None = None

    @field_validator("weight_method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> str | None:
        return _method_name(v)

    @field_validator("match")
    @classmethod
    def _check_match(cls, v: str) -> str:
        return check_match(v, "match", f"give a glob ('encoder.*'), 're:REGEX' or a type ({', '.join(LAYER_KINDS)})")

    def overrides(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("weights", "activations", "activation_scales", "bias",
                                              "weight_method", "equalize", "rotate", "backward", "compute")
                if k in self.model_fields_set}


class QuantConfig(_LayerOptions):
    """A validated quantization config (see the module docstring for the fields)."""

    weights: str | None = None
    activations: str | None = None
    activation_scales: ActivationScales = "static"
    bias: Bias = "float"
    layers: list[LayerRule] = []
    weight_method: str = "rtn"
    equalize: str | None = None
    rotate: str | None = None
    fold: bool = True
    backward: BackwardSpec | None = None
    compute: dict[str, Any] | None = None
    ops: list[OpRule] = []

    @field_validator("weight_method", mode="before")
    @classmethod
    def _method(cls, v: Any) -> str:
        return weight_method(v).name

    # ---- construction and round trips ------------------------------------------------------------------------

    @classmethod
    def coerce(cls, config: QuantConfig | Mapping[str, Any] | str | os.PathLike) -> QuantConfig:
        """A config from a QuantConfig, a dict, or a ``.yaml``/``.yml``/``.json``/``.toml`` file path."""
        if isinstance(config, QuantConfig):
            return config
        if isinstance(config, Mapping):
            return cls.model_validate(dict(config))
        if isinstance(config, (str, os.PathLike)):
            return cls.load(config)
        raise TypeError(f"config must be a dict, a QuantConfig or a YAML/JSON/TOML path, got {type(config).__name__}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> QuantConfig:
        """Read a YAML, JSON or TOML file."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {str(p)!r} does not exist")
        text = p.read_text()
        suffix = p.suffix.lower()
        if suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        elif suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            raise ValueError(f"config file {str(p)!r}: unknown extension {suffix!r}; valid: .yaml, .yml, .json, .toml")
        if not isinstance(data, dict):
            raise ValueError(f"config file {str(p)!r} must hold a mapping, got {type(data).__name__}")
        return cls.model_validate(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (rules keep only the fields they set); ``QuantConfig.coerce(c.to_dict()) == c``."""
        d = self.model_dump(mode="json", exclude={"layers", "ops"})
        if d["weight_method"] == "rtn":
            del d["weight_method"]
        for key, default in (("equalize", None), ("rotate", None), ("fold", True), ("backward", None),
                             ("compute", None)):
            if d[key] == default:
                del d[key]
        d["layers"] = [{"match": r.match, **{k: v.model_dump(exclude_unset=True) if isinstance(v, BackwardSpec) else v
                                             for k, v in r.overrides().items()}} for r in self.layers]
        if self.ops:
            d["ops"] = [{"match": r.match, **r.fields()} for r in self.ops]
        return d

    def to_yaml(self, path: str | os.PathLike | None = None) -> str:
        """YAML text; written atomically to ``path`` if given."""
        import yaml

        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            atomic_write(path, text)
        return text

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """JSON text; written atomically to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            atomic_write(path, text)
        return text


@dataclass(frozen=True)
class LayerPlan:
    """What happens to one quantizable layer.

    Attributes:
        name: the module's name in ``model.named_modules()``.
        module: the module itself.
        weight: the scheme of its weights, or None (FP32).
        activation: the scheme of its inputs, or None (FP32; always None for Embedding).
        dynamic: activation scales are recomputed from every input (else calibrated once).
        bias: ``"float"`` or ``"int32"`` (bias rounded to the accumulator grid ``s_x * s_w``).
        weight_method: how the weights are rounded (:data:`dtypelab.model.methods.WEIGHT_METHODS`): ``rtn``
            (round to nearest on every use) or a method that rounds once with the layer's calibration inputs.
        equalize: the equalizer spec (:mod:`dtypelab.model.equalize`), or None.
        rotate: the rotation spec (:mod:`dtypelab.model.fold`), or None.
        backward: the schemes of its backward pass (:class:`BackwardSpec`), or None (straight-through FP32).
        compute: the simulated arithmetic of its dot products (:class:`dtypelab.arith.Compute`), or None (FP32).
    """

    name: str
    module: nn.Module
    weight: Scheme | None
    activation: Scheme | None
    dynamic: bool = False
    bias: str = "float"
    weight_method: str = "rtn"
    equalize: str | None = None
    rotate: str | None = None
    backward: BackwardSpec | None = None
    compute: Compute | None = None

    @property
    def needs_inputs(self) -> bool:
        """Whether quantizing it needs the layer's calibration inputs (static activation scales, a weight
        method that rounds once, or equalization)."""
        return (self.activation is not None and not self.dynamic) or weight_method(self.weight_method).needs_inputs \
            or self.equalize is not None

    @property
    def kind(self) -> str:
        """The layer kind's type name (``"Linear"``, ``"MultiheadAttention"`` ...)."""
        kind = kind_of(self.module)
        return kind.name if kind is not None else type(self.module).__name__

    @property
    def quantized(self) -> bool:
        return self.weight is not None or self.activation is not None


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every module of a registered kind, by name (submodules of kinds that own their children left out)."""
    out: dict[str, nn.Module] = {}
    owned: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(prefix + ".") or prefix == "" for prefix in owned):
            continue
        kind = kind_of(module)
        if kind is None:
            continue
        out[name] = module
        if kind.owns_children:
            owned.append(name)
    return out


def _looks_like_type(pattern: str) -> bool:
    return bool(re.fullmatch(r"[A-Z][A-Za-z0-9_]*", pattern))


def _rule_matches(rule: LayerRule, layers: dict[str, nn.Module]) -> list[str]:
    pattern = rule.match
    if pattern.startswith("re:"):
        rx = re.compile(pattern[3:])
        return [n for n in layers if rx.fullmatch(n)]
    type_name = pattern[5:] if pattern.startswith("type:") else pattern if pattern in LAYER_KINDS else None
    if type_name is not None:
        if type_name not in LAYER_KINDS:
            raise ValueError(f"rule match {pattern!r}: unknown layer type {type_name!r}; valid types: "
                             f"{', '.join(LAYER_KINDS)}")
        return [n for n, m in layers.items() if kind_of(m).name == type_name]
    return [n for n in layers if fnmatch.fnmatchcase(n, pattern)]


def _no_match_error(rule: LayerRule, layers: dict[str, nn.Module]) -> ValueError:
    names = list(layers)
    shown = ", ".join(repr(n) for n in names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    hint = (f" {rule.match!r} is not a layer type either (valid types: {', '.join(LAYER_KINDS)})."
            if _looks_like_type(rule.match) else "")
    return ValueError(f"rule match {rule.match!r} matches no quantizable layer.{hint} Patterns are a glob on the "
                      f"module name, 're:REGEX', or a type ({', '.join(LAYER_KINDS)}); the layers are: "
                      f"{shown or '(none)'}")


def resolve(model: nn.Module, config: QuantConfig | Mapping[str, Any] | str | os.PathLike) -> dict[str, LayerPlan]:
    """One :class:`LayerPlan` per quantizable layer of ``model`` (FP32 layers included, with None schemes).

    Raises:
        ValueError: a rule matching nothing, an unknown type, a bad scheme, static activation scales with a
            scheme that cannot have them, ``bias: int32`` without static weight and activation schemes, or
            tied weights given different schemes.

    Example:
        >>> import torch
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2))
        >>> resolve(m, {"layers": [{"match": "Conv2d", "weights": "int8"}]})
        Traceback (most recent call last):
        ...
        ValueError: rule match 'Conv2d' matches no quantizable layer. ...
    """
    cfg = QuantConfig.coerce(config)
    layers = quantizable_layers(model)
    settings = {n: {"weights": cfg.weights, "activations": cfg.activations,
                    "activation_scales": cfg.activation_scales, "bias": cfg.bias,
                    "weight_method": cfg.weight_method, "equalize": cfg.equalize, "rotate": cfg.rotate,
                    "backward": cfg.backward, "compute": cfg.compute}
                for n in layers}
    ruled_compute: set[str] = set()
    for rule in cfg.layers:
        matched = _rule_matches(rule, layers)
        if not matched:
            raise _no_match_error(rule, layers)
        for n in matched:
            backward = _merge_backward(settings[n]["backward"], rule) if "backward" in rule.model_fields_set \
                else settings[n]["backward"]
            settings[n].update(rule.overrides(), backward=backward)
            if "compute" in rule.model_fields_set and rule.compute is not None:
                ruled_compute.add(n)

    plans: dict[str, LayerPlan] = {}
    tied: dict[int, tuple[str, Scheme | None, bool]] = {}
    for name, module in layers.items():
        s = settings[name]
        kind = kind_of(module)
        weight = Scheme.parse(s["weights"]) if s["weights"] else None
        activation = Scheme.parse(s["activations"]) if s["activations"] and kind.activation_args else None
        dynamic = s["activation_scales"] == "dynamic"
        label = f"layer {name!r} ({kind.name})"
        method = weight_method(s["weight_method"]) if weight is not None else weight_method("rtn")
        if method.kinds and kind.name not in method.kinds:
            raise ValueError(f"{label}: weight method {method.name} supports {', '.join(method.kinds)} layers only; "
                             f"use method: rtn here (a layer rule can set it)")
        if s["equalize"] is not None and s["bias"] == "int32":
            raise ValueError(f"{label}: bias: int32 puts the bias on the grid of the weight's scales, which "
                             "equalize changes: use one or the other")
        if s["equalize"] is not None and kind.name not in ("Linear", *TRANSPOSED):
            raise ValueError(f"{label}: equalize ({s['equalize']}) scales a Linear (or GPT-2 Conv1D) layer's input "
                             f"channels; a {kind.name} layer cannot have it (set equalize: null for it in a layer "
                             "rule)")
        if s["rotate"] is not None and kind.name != "Linear":
            raise ValueError(f"{label}: rotate ({s['rotate']}) rotates a Linear layer's input; a {kind.name} layer "
                             "cannot have it (set rotate: null for it in a layer rule)")
        if s["rotate"] is not None and s["equalize"] is not None:
            raise ValueError(f"{label}: equalize ({s['equalize']}) and rotate ({s['rotate']}) both transform the "
                             "layer's input: give it one of them")
        if s["rotate"] is not None and s["bias"] == "int32":
            raise ValueError(f"{label}: bias: int32 puts the bias on the grid of the weight's scales, which "
                             "rotate changes: use one or the other")
        rounds_once = method.needs_inputs or s["equalize"] is not None or s["rotate"] is not None
        if activation is not None and not dynamic:
            if not activation.static:
                raise ValueError(f"{label}: activation scheme {activation} has per-block scales, which depend on "
                                 "each input: use activation_scales: dynamic, or tensor / channel:AXIS granularity")
        if s["bias"] == "int32":
            if weight is None or activation is None or dynamic or getattr(module, "bias", None) is None \
                    or kind.name not in ("Linear", "Conv1d", "Conv2d") \
                    or weight.granularity not in (PerTensor(), PerAxis(0)) \
                    or not isinstance(activation.granularity, PerTensor):
                raise ValueError(f"{label}: bias: int32 needs a Linear/Conv layer with a bias, a weight scheme per "
                                 "tensor or per output channel and a static per-tensor activation scheme (the "
                                 "bias lives on the grid s_x * s_w)")
        for owner, attr in kind.weights(module):
            t = raw_weight(owner, attr)
            key = id(t)
            if key in tied and tied[key][1] != weight:
                raise ValueError(f"{label}: its {attr} is tied to layer {tied[key][0]!r}'s, but the schemes differ "
                                 f"({weight} vs {tied[key][1]}); tied weights are stored once: give them one scheme")
            if key in tied and (rounds_once or tied[key][2]):
                raise ValueError(f"{label}: its {attr} is tied to layer {tied[key][0]!r}'s; a weight method that "
                                 "rounds once (gptq) or equalize fits a weight to one layer's inputs: use method: "
                                 "rtn and no equalize on tied weights")
            tied.setdefault(key, (name, weight, rounds_once))
        backward = s["backward"] if s["backward"] is not None and s["backward"].active else None
        compute = None
        if s["compute"] is not None and kind.name in COMPUTE_KINDS:
            compute = Compute.parse(s["compute"])
        elif name in ruled_compute:
            raise ValueError(f"{label}: compute simulates the dot products of {', '.join(COMPUTE_KINDS)} layers; "
                             f"a {kind.name} layer cannot have it (attention products: an ops rule)")
        plans[name] = LayerPlan(name, module, weight, activation, dynamic, s["bias"], method.name, s["equalize"],
                                s["rotate"], backward, compute)
    if cfg.compute is not None:
        _check_compute_reaches(model, layers)
    return plans


def _check_compute_reaches(model: nn.Module, layers: dict[str, nn.Module]) -> None:
    """A top-level ``compute:`` must reach a layer: ValueError for a model with no layer of a compute kind, or
    with modules of a compute kind's class that are not registered layers (transformers' ``Conv1D`` before
    ``register_conv1d``), whose dot products it would silently leave in FP32."""
    stray = [n for n, m in model.named_modules() if kind_of(m) is None
             and any(c.__name__ in COMPUTE_KINDS for c in module_type(m).__mro__)]
    if stray:
        shown = ", ".join(repr(n) for n in stray[:4]) + (f", ... ({len(stray)} in all)" if len(stray) > 4 else "")
        raise ValueError(f"compute: modules {shown} ({type(model.get_submodule(stray[0])).__name__}) are not a "
                         "registered layer kind, so compute would not reach them; register their kind first "
                         "(transformers' GPT-2 Conv1D: dtypelab.workloads.lm.register_conv1d())")
    if not any(kind_of(m).name in COMPUTE_KINDS for m in layers.values()):
        kinds = sorted({kind_of(m).name for m in layers.values()})
        raise ValueError(f"compute simulates the dot products of {', '.join(COMPUTE_KINDS)} layers; this model has "
                         f"none (its layers: {', '.join(kinds) or 'none'}), so compute would change nothing "
                         "(attention products: an ops rule)")


__all__ = ["QuantConfig", "LayerRule", "LayerPlan", "BackwardSpec", "resolve", "quantizable_layers"]
