"""The per-layer plan the cost models price: which weight and activation scheme each layer has.

Configs are resolved by :func:`dtypelab.model.config.resolve` (one resolution rule for the whole package);
an already resolved ``{name: LayerPlan}`` mapping is accepted as is.
"""

from __future__ import annotations

from collections.abc import Mapping
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
