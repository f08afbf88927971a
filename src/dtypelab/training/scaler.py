"""Loss scaling for formats of narrow range: static or dynamic (grow, back off, skip steps on inf/NaN).

The loss is multiplied by ``scale`` before ``backward()``, so the gradients that backward quantization rounds
(:mod:`dtypelab.model.backward`: errors and weight gradients in e5m2, say) sit higher in the format's range;
:meth:`LossScaler.step` divides them by ``scale`` again, in FP32, before the optimizer's step, which it skips when
any gradient is inf or NaN. A dynamic scaler then multiplies ``scale`` by ``backoff``; after ``interval`` finite
steps in a row it multiplies it by ``growth`` (torch.amp's GradScaler rule). A static scaler keeps its scale
(and still skips a non-finite step).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = torch.optim.SGD([w], lr=0.5)
    >>> scaler = LossScaler(init_scale=2.0**10, dynamic=True, interval=1)
    >>> scaler.scale(w.sum()).backward()
    >>> scaler.step(opt), w.tolist(), scaler.scale_value
    (True, [0.5, 0.5], 2048.0)
    >>> w.grad = torch.tensor([float("inf"), 0.0]); scaler.step(opt), w.tolist(), scaler.scale_value
    (False, [0.5, 0.5], 1024.0)
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["LossScaler", "loss_scaler"]


class LossScaler:
    """``LossScaler(init_scale=2**16, dynamic=True, growth=2.0, backoff=0.5, interval=2000)``.

    ``skipped`` counts the steps skipped for non-finite gradients, ``steps`` the steps taken.
    """

    def __init__(self, init_scale: float = 2.0**16, dynamic: bool = True, growth: float = 2.0,
                 backoff: float = 0.5, interval: int = 2000) -> None:
        if not (isinstance(init_scale, (int, float)) and math.isfinite(init_scale) and init_scale > 0):
            raise ValueError(f"loss scale must be a finite number > 0, got {init_scale!r}")
        if not growth > 1.0:
            raise ValueError(f"growth must be > 1, got {growth!r}")
        if not 0.0 < backoff < 1.0:
            raise ValueError(f"backoff must be in (0, 1), got {backoff!r}")
        if not (isinstance(interval, int) and interval >= 1):
            raise ValueError(f"interval must be an integer >= 1, got {interval!r}")
        self.scale_value = float(init_scale)
        self.dynamic, self.growth, self.backoff, self.interval = dynamic, float(growth), float(backoff), interval
        self.steps = self.skipped = 0
        self._good = 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss * scale``: call ``backward()`` on this."""
        return loss * self.scale_value

    def step(self, optimizer: Any) -> bool:
        """Unscale the gradients of ``optimizer``'s parameters and step it, unless one is inf or NaN (then the
        gradients are left as they are and no step is taken); update the scale. Returns whether it stepped."""
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if finite:
            with torch.no_grad():
                for g in grads:
                    g.div_(self.scale_value)
            optimizer.step()
            self.steps += 1
        else:
            self.skipped += 1
        self._update(finite)
        return finite

    def _update(self, finite: bool) -> None:
        if not self.dynamic:
            return
        if not finite:
            self.scale_value *= self.backoff
            self._good = 0
            return
        self._good += 1
        if self._good >= self.interval:
            self.scale_value *= self.growth
            self._good = 0

    def __repr__(self) -> str:
        kind = "dynamic" if self.dynamic else "static"
        return f"LossScaler({kind}, scale={self.scale_value:g}, steps={self.steps}, skipped={self.skipped})"


def loss_scaler(spec: Any) -> LossScaler | None:
    """A scaler from a config value: None (no scaling), ``"dynamic"``, ``"static:S"``, a number (static), or a
    mapping of :class:`LossScaler`'s arguments (``{dynamic: true, init_scale: 1024, interval: 100}``).

    Example:
        >>> loss_scaler("static:1024"), loss_scaler(None)
        (LossScaler(static, scale=1024, steps=0, skipped=0), None)
    """
    if spec is None:
        return None
    if isinstance(spec, LossScaler):
        return spec
    if isinstance(spec, bool):
        raise ValueError(f"loss_scale {spec!r}: give null, 'dynamic', 'static:S', a number or a mapping")
    if isinstance(spec, (int, float)):
        return LossScaler(float(spec), dynamic=False)
    if isinstance(spec, dict):
        known = {"init_scale", "dynamic", "growth", "backoff", "interval"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"loss_scale: unknown key(s) {unknown}; valid: {', '.join(sorted(known))}")
        return LossScaler(**spec)
    if isinstance(spec, str):
        text = spec.strip().lower()
        if text == "dynamic":
            return LossScaler()
        if text.startswith("static:"):
            try:
                return LossScaler(float(text[7:]), dynamic=False)
            except ValueError as err:
                raise ValueError(f"loss_scale {spec!r}: {err}") from None
    raise ValueError(f"loss_scale {spec!r}: give null, 'dynamic', 'static:S' (S > 0), a number or a mapping of "
                     "init_scale, dynamic, growth, backoff, interval")
