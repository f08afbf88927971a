"""The per-layer plan the cost models price: which weight and activation scheme each layer has.

Configs are resolved by :func:`dtypelab.model.config.resolve` (one resolution rule for the whole package);
an already resolved ``{name: LayerPlan}`` mapping is accepted as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from dtypelab.schemes import Scheme


class Plan(Protocol):
    """What the cost models read of a ``LayerPlan``."""

    name: str
    module: nn.Module
    weight: Scheme | None
    activation: Scheme | None


def resolve_plans(model: nn.Module, config: Any) -> dict[str, Plan]:
    """``{layer name: plan}`` for ``config`` (see ``dtypelab.model.config``), or ``config`` if already resolved."""
    if isinstance(config, Mapping) and config and all(
            hasattr(v, "module") and hasattr(v, "weight") and hasattr(v, "activation") for v in config.values()):
        return dict(config)
    from dtypelab.model.config import resolve

    return dict(resolve(model, config if config is not None else {}))


@dataclass(frozen=True)
class OpPlan:
    """What an ``ops:`` rule gives a module's activation x activation products (the Q·Kᵀ and A·V of BERT and
    GPT-2 attention and of ``nn.MultiheadAttention``): the operands' scheme (dynamic scales) and the simulated
    compute. For a MultiheadAttention it replaces the layer plan's activation scheme on those two products only."""

    name: str
    module: nn.Module
    activation: Scheme | None
    compute: Any = None  # dtypelab.arith.Compute
    weight: Scheme | None = None
    dynamic: bool = True


def resolve_op_plans(model: nn.Module, config: Any) -> dict[str, OpPlan]:
    """``{module name: OpPlan}`` of the ``ops:`` rules of ``config`` that set ``operands`` or ``compute``
    (none for an already resolved plan mapping)."""
    if config is None or (isinstance(config, Mapping) and config and all(
            hasattr(v, "module") and hasattr(v, "weight") for v in config.values())):
        return {}
    from dtypelab.arith.compute import Compute
    from dtypelab.arith.ops import resolve_ops
    from dtypelab.model.config import QuantConfig

    modules = dict(model.named_modules())
    return {name: OpPlan(name, modules[name], Scheme.parse(spec["operands"]) if spec.get("operands") else None,
                         Compute.parse(spec["compute"]) if spec.get("compute") else None)
            for name, spec in resolve_ops(model, QuantConfig.coerce(config).ops).items()
            if spec.get("operands") or spec.get("compute")}
