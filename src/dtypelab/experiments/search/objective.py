"""The global-local contrastive objective (after LPQ, DAC 2024), lower is better.

* **global** — InfoNCE between the quantized model's final representations ``q_i`` and the FP32 model's
  ``f_i`` of the same calibration batch: each sample's positive is its own FP32 representation, the other
  samples' are negatives. With L2-normalised rows and temperature ``tau``:
  ``L_global = mean_i [ -log softmax_j(q_i · f_j / tau)_i ]``, minus the FP32 model's own value
  ``L_global(f, f)`` so that a perfect quantization scores 0 (``tau = 0.1``).
* **local** — per-layer output divergence against FP32 on the FP32 layer inputs (cached once):
  ``D_l = ||y_l^q - y_l||² / ||y_l||²`` (relative squared error), averaged over the searched layers.
* ``objective = w_global * L_global + w_local * mean_l D_l`` with ``w_global = w_local = 1`` by default;
  the ablation sets one weight to 0.

Example:
    >>> import torch
    >>> f = torch.nn.functional.normalize(torch.randn(8, 4), dim=1)
    >>> round(float(info_nce(f, f) - info_nce(f, f)), 6), bool(info_nce(-f, f) > info_nce(f, f))
    (0.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

TAU = 0.1


def info_nce(q: torch.Tensor, f: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """Mean InfoNCE loss of queries ``q`` against keys ``f`` (row i's positive is f_i)."""
    q = F.normalize(q.flatten(1).double(), dim=1)
    f = F.normalize(f.flatten(1).double(), dim=1)
    logits = q @ f.T / tau
    return F.cross_entropy(logits, torch.arange(len(q), device=q.device))


def relative_error(y_q: torch.Tensor, y: torch.Tensor) -> float:
    """``||y_q - y||² / ||y||²``."""
    y = y.reshape(-1).double()
    d = y_q.reshape(-1).double() - y
    return float(d.dot(d) / y.dot(y).clamp_min(1e-300))


@dataclass(frozen=True)
class Objective:
    """Weights of the two terms; ``global_weight=0`` or ``local_weight=0`` gives the ablations."""

    global_weight: float = 1.0
    local_weight: float = 1.0
    tau: float = TAU

    def __post_init__(self) -> None:
        if self.global_weight < 0 or self.local_weight < 0 or self.global_weight + self.local_weight == 0:
            raise ValueError(f"objective weights must be >= 0 and not both 0, got global={self.global_weight}, "
                             f"local={self.local_weight}")

    @property
    def name(self) -> str:
        """``global``, ``local``, ``global+local`` (equal weights), or the weighted sum, e.g. ``2*global+1*local``."""
        if self.local_weight == 0:
            return "global"
        if self.global_weight == 0:
            return "local"
        if self.global_weight == self.local_weight:
            return "global+local"
        return f"{self.global_weight:g}*global+{self.local_weight:g}*local"

    def __call__(self, q_final: torch.Tensor | None, f_final: torch.Tensor, local: list[float]) -> float:
        total = 0.0
        if self.global_weight:
            baseline = info_nce(f_final, f_final, self.tau)
            total += self.global_weight * float(info_nce(q_final, f_final, self.tau) - baseline)
        if self.local_weight and local:
            total += self.local_weight * sum(local) / len(local)
        return total
