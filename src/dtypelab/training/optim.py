"""An optimizer wrapper that keeps weights, gradients and optimizer states in any format (QPyTorch's ``OptimLP``
shape, bitsandbytes' block-wise 8-bit states).

:class:`LowPrecisionOptimizer` wraps any ``torch.optim`` optimizer. Each :meth:`~LowPrecisionOptimizer.step`:

1. rounds every gradient to the ``grad`` scheme (the gradient the optimizer sees);
2. with ``master_weights``, puts the FP32 master copy into the parameter, so the update is applied to it;
3. runs the wrapped optimizer's step, in FP32, from the states as they were stored;
4. rounds each state tensor (``momentum_buffer``, Adam's ``exp_avg`` and ``exp_avg_sq``, ...) to its scheme, in
   place: what is kept is what the format stores. As in bitsandbytes' 8-bit optimizers, the step itself uses the
   FP32 state it just computed from the dequantized old state and the gradient; what is stored for the next step
   is its rounding, e.g. ``dt8/block:256/absmax`` (dynamic tree in blocks of 256 with an absmax scale) for the
   first moment and ``udt8/block:256/absmax`` (the unsigned tree) for the second;
5. rounds the updated weight to the ``weight`` scheme (kept in the model; the master copy keeps the FP32 one).
   A stochastic rounding (``bf16/tensor/none//sr``) makes tiny updates unbiased where nearest would stall.

Every scheme is a spec or :class:`~dtypelab.schemes.Scheme`; None or ``fp32`` keeps FP32. Stochastic schemes draw
from ``generator``. :meth:`~LowPrecisionOptimizer.state_bits` counts the stored bits of each state (codes, scales,
per the schemes' exact storage) and :meth:`~LowPrecisionOptimizer.state_bits_per_param` their sum per parameter.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> w = torch.nn.Parameter(torch.randn(512))
    >>> opt = LowPrecisionOptimizer(torch.optim.Adam([w], lr=1e-3), weight="bf16",
    ...                             states={"exp_avg": "dt8/block:256/absmax", "exp_avg_sq": "udt8/block:256/absmax"})
    >>> w.grad = torch.randn(512)
    >>> opt.step()
    >>> opt.state_bits_per_param()      # 8 + 8 bits, and two fp32 scales per 256 elements
    16.25
    >>> bool((w.detach().to(torch.bfloat16).float() == w.detach()).all())
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from dtypelab.schemes import Scheme, fake_quantize
from dtypelab.training._schemes import scheme_or_none

__all__ = ["LowPrecisionOptimizer"]

StateSchemes = Scheme | str | None | Mapping[str, Scheme | str | None]


class LowPrecisionOptimizer:
    """``LowPrecisionOptimizer(optimizer, weight=None, grad=None, states=None, master_weights=False,
    generator=None)`` (see the module docstring).

    ``states`` is one scheme for every state tensor, or a mapping from state names (the keys of
    ``optimizer.state[p]``) to schemes; names not in the mapping stay FP32, and a name no parameter's state holds
    is an error at the first step. Only state tensors shaped like their parameter are rounded (not Adam's 0-d step
    counter). ``param_groups`` and ``state`` are the wrapped optimizer's (attach LR schedulers to
    :attr:`optimizer`).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, weight: Scheme | str | None = None,
                 grad: Scheme | str | None = None, states: StateSchemes = None, master_weights: bool = False,
                 generator: torch.Generator | None = None) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.weight = scheme_or_none(weight, "weight")
        self.grad = scheme_or_none(grad, "grad")
        if isinstance(states, Mapping):
            self.states: dict[str, Scheme | None] = {str(k): scheme_or_none(v, f"state {k!r}")
                                                     for k, v in states.items()}
            self.default_state: Scheme | None = None
        else:
            self.states, self.default_state = {}, scheme_or_none(states, "states")
        self.generator = generator
        self._checked = False
        self.master: dict[torch.Tensor, torch.Tensor] = {}
        with torch.no_grad():
            for p in self._params():
                if master_weights:
                    self.master[p] = p.detach().clone()
                if self.weight is not None:  # the model holds the weight format from the start
                    p.copy_(self._round(p, self.weight))

    # ---- the wrapped optimizer's surface --------------------------------------------------------------------

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _round(self, x: torch.Tensor, scheme: Scheme) -> torch.Tensor:
        return fake_quantize(x.detach(), scheme, generator=self.generator)

    def state_scheme(self, name: str) -> Scheme | None:
        """The scheme state ``name`` is stored in (None: FP32)."""
        return self.states.get(name, self.default_state) if self.states else self.default_state

    # ---- the step ---------------------------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of the wrapped optimizer with the gradient, states and weights in their formats."""
        params = [p for p in self._params() if p.grad is not None]
        with torch.no_grad():
            for p in params:
                if self.grad is not None:
                    p.grad.copy_(self._round(p.grad, self.grad))
                if p in self.master:
                    p.copy_(self.master[p])
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        with torch.no_grad():
            for p in params:
                for name, t in self.optimizer.state[p].items():
                    scheme = self.state_scheme(name)
                    if scheme is not None and _is_state_tensor(t, p):
                        t.copy_(self._round(t, scheme))
                if p in self.master:
                    self.master[p].copy_(p)
                if self.weight is not None:
                    p.copy_(self._round(p, self.weight))
            if not self._checked and params:
                self._check_state_names()
        return loss

    def _check_state_names(self) -> None:
        held = {name for p in self._params() for name in self.optimizer.state.get(p, {})}
        missing = sorted(set(self.states) - held)
        if missing:
            raise ValueError(f"states {missing} are not states of {type(self.optimizer).__name__}; its states are "
                             f"{sorted(held) or '(none)'}")
        self._checked = True

    # ---- memory ------------------------------------------------------------------------------------------------

    def state_bits(self) -> dict[str, int]:
        """Stored bits of each state (summed over parameters; FP32 states 32 bits an element), with the master
        weights as ``"master"`` where kept. Exact: codes, scales and indices of each state's scheme.

        Example:
            >>> w = torch.nn.Parameter(torch.zeros(256))
            >>> opt = LowPrecisionOptimizer(torch.optim.SGD([w], lr=0.1, momentum=0.9), states="dt8/block:256/absmax")
            >>> w.grad = torch.ones(256); opt.step(); opt.state_bits()
            {'momentum_buffer': 2080}
        """
        bits: dict[str, int] = {}
        for p in self._params():
            for name, t in self.optimizer.state.get(p, {}).items():
                if not _is_state_tensor(t, p):
                    continue
                scheme = self.state_scheme(name)
                bits[name] = bits.get(name, 0) + (32 * t.numel() if scheme is None else scheme.storage_bits(t.shape))
        if self.master:
            bits["master"] = sum(32 * m.numel() for m in self.master.values())
        return bits

    def state_bits_per_param(self) -> float:
        """All the state bits (master weights included) over the number of parameters."""
        n = sum(p.numel() for p in self._params())
        return sum(self.state_bits().values()) / max(n, 1)


def _is_state_tensor(t: Any, p: torch.Tensor) -> bool:
    """A per-element state of ``p``: floating, shaped like it, not 0-d (a step counter; the states of a 0-d
    parameter stay FP32)."""
    return isinstance(t, torch.Tensor) and t.is_floating_point() and t.dim() > 0 and t.shape == p.shape
