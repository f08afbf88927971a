"""Training from scratch under a config: forward and backward formats, an optimizer in formats, loss scaling.

A training config (YAML/JSON/TOML or a dict, validated by :class:`TrainConfig`)::

    epochs: 4                      # defaults: the workload's own schedule (digits-vgg: TrainSettings)
    batch_size: 64
    seed: 0
    schedule: onecycle             # onecycle (the workload's: 25 % warm-up) | constant
    quant:                         # a model config (dtypelab.model.config): forward and backward formats
      weights: e4m3/tensor/absmax
      activations: e4m3/tensor/absmax
      activation_scales: dynamic
      backward: {error: e5m2/tensor/absmax, weight_grad: e5m2/tensor/absmax}
    optimizer:                     # the wrapped torch optimizer and its formats (dtypelab.training.optim)
      name: adam                   # adam | sgd (OPTIMIZERS)
      lr: 0.002
      weight_decay: 0.0001
      weight: bf16/tensor/none//sr # the weight after the update (null: FP32)
      master_weights: false
      grad: null
      states: {exp_avg: dt8/block:256/absmax, exp_avg_sq: udt8/block:256/absmax}
    loss_scale: dynamic            # null | dynamic | static:S | {init_scale: ..., interval: ...}

:func:`train` builds the workload's model untrained (seeded), quantizes its forward (:func:`dtypelab.quantize_model`)
and backward (:func:`dtypelab.model.backward.attach_backward`), and trains it with the workload's data and
evaluation (:data:`TRAIN_TASKS`: digits-vgg reuses :mod:`dtypelab.workloads.digits`: its split, model, order of
batches and schedule). The :class:`TrainRun` holds the curves (train loss and accuracy, test loss and the primary
metric per epoch), the state bits per parameter and the steps skipped by loss scaling. :func:`fp32_config` is the
same schedule with every format taken off: the baseline a run is shown beside.

Example:
    >>> cfg = TrainConfig.coerce({"epochs": 1, "optimizer": {"weight": "bf16"}})
    >>> cfg.optimizer.weight, fp32_config(cfg).optimizer.weight, fp32_config(cfg).epochs
    ('bf16/tensor/none', None, 1)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, field_validator
from torch import nn

from dtypelab.model.config import QuantConfig

log = logging.getLogger(__name__)

__all__ = ["TrainConfig", "OptimizerSpec", "TrainRun", "TrainTask", "TRAIN_TASKS", "OPTIMIZERS", "train",
           "fp32_config", "train_task"]


# ---- optimizers ----------------------------------------------------------------------------------------------


def _adam(params: Any, spec: OptimizerSpec) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def _sgd(params: Any, spec: OptimizerSpec) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)


#: optimizer name -> factory(params, spec)
OPTIMIZERS: dict[str, Callable[[Any, Any], torch.optim.Optimizer]] = {"adam": _adam, "sgd": _sgd}


def _spec(v: Any, what: str) -> str | None:
    from dtypelab.training._schemes import scheme_or_none

    scheme = scheme_or_none(v, what)
    return None if scheme is None else str(scheme)


class OptimizerSpec(BaseModel):
    """The optimizer and its formats (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    weight: str | None = None
    grad: str | None = None
    states: str | dict[str, str | None] | None = None
    master_weights: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {v!r}; valid: {', '.join(OPTIMIZERS)}")
        return v

    @field_validator("lr")
    @classmethod
    def _lr(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"lr must be > 0, got {v!r}")
        return v

    @field_validator("weight", "grad", mode="before")
    @classmethod
    def _schemes(cls, v: Any, info: Any) -> str | None:
        return _spec(v, info.field_name)

    @field_validator("states", mode="before")
    @classmethod
    def _states(cls, v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): _spec(s, f"state {k!r}") for k, s in v.items()}
        return _spec(v, "states")


class TrainConfig(BaseModel):
    """A validated training config (see the module docstring); None fields take the workload's defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    schedule: Literal["onecycle", "constant"] = "onecycle"
    train_limit: int | None = None
    test_limit: int | None = None
    quant: QuantConfig | None = None
    optimizer: OptimizerSpec = OptimizerSpec()
    loss_scale: Any = None

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if v < 0:
            raise ValueError(f"seed must be an integer >= 0, got {v!r}")
        return v

    @field_validator("epochs", "batch_size", "train_limit", "test_limit")
    @classmethod
    def _positive(cls, v: int | None, info: Any) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be a positive integer, got {v!r}")
        return v

    @field_validator("loss_scale")
    @classmethod
    def _loss_scale(cls, v: Any) -> Any:
        from dtypelab.training.scaler import loss_scaler

        loss_scaler(v)  # refused here, before anything trains
        return v

    @classmethod
    def coerce(cls, config: TrainConfig | Mapping[str, Any] | str | os.PathLike | None) -> TrainConfig:
        """A config from a TrainConfig, a dict, None (every default) or a YAML/JSON/TOML file."""
        if config is None:
            return cls()
        if isinstance(config, TrainConfig):
            return config
        if isinstance(config, Mapping):
            return cls.model_validate(dict(config))
        if isinstance(config, (str, os.PathLike)):
            return cls.model_validate(_read(Path(config)))
        raise TypeError(f"config must be a dict, a TrainConfig or a YAML/JSON/TOML path, got {type(config).__name__}")

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude={"quant"})
        d["quant"] = self.quant.to_dict() if self.quant is not None else None
        return d


def _read(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ValueError(f"training config {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"training config {str(p)!r} is not valid YAML: {' '.join(str(err).split())}") from None
    elif suffix == ".json":
        data = json.loads(p.read_text())
    elif suffix == ".toml":
        import tomllib

        data = tomllib.loads(p.read_text())
    else:
        raise ValueError(f"training config {str(p)!r}: unknown extension {suffix!r}; valid: .yaml, .yml, .json, .toml")
    if not isinstance(data, dict):
        raise ValueError(f"training config {str(p)!r} must hold a mapping, got {type(data).__name__}")
    return data


def fp32_config(config: TrainConfig) -> TrainConfig:
    """The same schedule, seed and optimizer with every format, loss scaling and master copy taken off."""
    opt = config.optimizer.model_copy(update={"weight": None, "grad": None, "states": None, "master_weights": False})
    return config.model_copy(update={"quant": None, "optimizer": opt, "loss_scale": None})


# ---- what a workload gives to training -----------------------------------------------------------------------


@dataclass
class TrainTask:
    """A trainable workload: an untrained model, the training split, the evaluation, the default schedule."""

    name: str
    primary_metric: str
    new_model: Callable[[], nn.Module]
    x_train: torch.Tensor
    y_train: torch.Tensor
    evaluate: Callable[[nn.Module, int | None], dict[str, float]]
    calibration: Callable[[], list[Any]]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float


def _digits_task() -> TrainTask:
    from dtypelab.workloads.digits import VGG, DigitsVGG, TrainSettings

    wl, settings = DigitsVGG(), TrainSettings()
    return TrainTask(wl.name, wl.primary_metric, lambda: VGG(in_channels=1), wl.data["x_train"], wl.data["y_train"],
                     wl.evaluate, wl.calibration, settings.epochs, settings.batch_size, settings.lr,
                     settings.weight_decay)


#: workload name -> its training task
TRAIN_TASKS: dict[str, Callable[[], TrainTask]] = {"digits-vgg": _digits_task}


def train_task(name: str) -> TrainTask:
    """The :class:`TrainTask` of a workload in :data:`TRAIN_TASKS`."""
    if name not in TRAIN_TASKS:
        raise ValueError(f"workload {name!r} cannot be trained from scratch here; trainable: {', '.join(TRAIN_TASKS)}")
    return TRAIN_TASKS[name]()


# ---- the run -------------------------------------------------------------------------------------------------


@dataclass
class TrainRun:
    """The curves and figures of one training run."""

    label: str
    workload: str
    primary_metric: str
    config: dict[str, Any]
    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_metric: list[float] = field(default_factory=list)
    state_bits: dict[str, int] = field(default_factory=dict)
    state_bits_per_param: float = 0.0
    skipped_steps: int = 0
    loss_scale: float | None = None
    seconds: float = 0.0

    @property
    def final(self) -> float:
        """The primary metric after the last epoch."""
        return self.test_metric[-1] if self.test_metric else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainRun:
        return cls(**dict(d))


def _merged(cfg: TrainConfig, task: TrainTask) -> TrainConfig:
    opt = cfg.optimizer
    if "lr" not in opt.model_fields_set or "weight_decay" not in opt.model_fields_set:
        opt = opt.model_copy(update={k: getattr(opt, k) if k in opt.model_fields_set else getattr(task, k)
                                     for k in ("lr", "weight_decay")})
    return cfg.model_copy(update={"epochs": cfg.epochs or task.epochs, "batch_size": cfg.batch_size or task.batch_size,
                                  "optimizer": opt})


def train(workload: str, config: TrainConfig | Mapping[str, Any] | str | os.PathLike | None = None,
          label: str | None = None, task: TrainTask | None = None) -> TrainRun:
    """Train ``workload``'s model from scratch under ``config``; deterministic for a seed (on the CPU).

    Raises:
        ValueError: an unknown workload, a bad config (before anything trains).
    """
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from dtypelab.model import quantize_model
    from dtypelab.model.backward import attach_backward
    from dtypelab.training import LowPrecisionOptimizer, loss_scaler
    from dtypelab.workloads.base import torch_threads

    task = task or train_task(workload)
    cfg = _merged(TrainConfig.coerce(config), task)
    spec = cfg.optimizer
    gen = torch.Generator().manual_seed(cfg.seed)  # the workload's order of batches (digits.train's)
    rounding = torch.Generator().manual_seed(cfg.seed + 1)  # stochastic rounding of the backward and the optimizer
    order = torch.randperm(len(task.y_train), generator=gen)
    if cfg.train_limit is not None:
        order = order[: cfg.train_limit]
    x_train, y_train = task.x_train[order], task.y_train[order]
    steps = -(-len(y_train) // cfg.batch_size)
    run = TrainRun(label or "config", task.name, task.primary_metric, cfg.to_dict())
    start = time.perf_counter()
    with torch_threads():
        torch.manual_seed(cfg.seed)
        model = task.new_model()
        if cfg.quant is not None:
            quantize_model(model, cfg.quant, calibration=task.calibration(), stats=False)
            attach_backward(model, cfg.quant, generator=rounding)
        base = OPTIMIZERS[spec.name](model.parameters(), spec)
        opt = LowPrecisionOptimizer(base, spec.weight, spec.grad, spec.states, spec.master_weights, generator=rounding)
        sched = None if cfg.schedule == "constant" else torch.optim.lr_scheduler.OneCycleLR(
            base, max_lr=spec.lr, total_steps=max(cfg.epochs * steps, 8), pct_start=0.25)  # (< 8: no warm-up step)
        scaler = loss_scaler(cfg.loss_scale)
        for epoch in tqdm(range(cfg.epochs), desc=f"training {task.name} ({run.label})", unit="epoch", disable=None):
            model.train()
            perm = torch.randperm(len(y_train), generator=gen)
            loss_sum, correct = 0.0, 0
            for i in range(0, len(y_train), cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                logits = model(x_train[idx])
                loss = F.cross_entropy(logits, y_train[idx])
                opt.zero_grad(set_to_none=True)
                (scaler.scale(loss) if scaler is not None else loss).backward()
                if scaler is not None:
                    stepped = scaler.step(opt)
                else:
                    opt.step()
                    stepped = True
                if stepped and sched is not None:
                    sched.step()
                loss_sum += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y_train[idx]).sum())
            metrics = task.evaluate(model, cfg.test_limit)
            run.epoch.append(epoch + 1)
            run.train_loss.append(loss_sum / len(y_train))
            run.train_acc.append(100.0 * correct / len(y_train))
            run.test_loss.append(metrics.get("loss", float("nan")))
            run.test_metric.append(metrics[task.primary_metric])
            log.info("%s (%s) epoch %d: train loss %.4f, test %s %.2f", task.name, run.label, epoch + 1,
                     run.train_loss[-1], task.primary_metric, run.test_metric[-1])
    run.state_bits = opt.state_bits()
    run.state_bits_per_param = opt.state_bits_per_param()
    run.skipped_steps = scaler.skipped if scaler is not None else 0
    run.loss_scale = scaler.scale_value if scaler is not None else None
    run.seconds = time.perf_counter() - start
    return run
