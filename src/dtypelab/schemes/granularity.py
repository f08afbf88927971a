"""Granularity: which elements share one scale.

* ``tensor`` — one scale for the whole tensor;
* ``channel`` / ``channel:AXIS`` — one scale per index along AXIS (default 0: the output channel of a
  Linear/Conv weight, i.e. row-wise);
* ``block:N`` — contiguous blocks of N along the last axis when N divides it, otherwise contiguous blocks
  of N of the flattened tensor (the last one padded with zeros, which are not stored);
* ``sorted:N`` — seed 002's "stable embedding": groups of N elements of consecutive magnitude (a stable
  sort of ``|x|``); the permutation is stored and counted, ``ceil(log2(numel))`` bits per element.

Grouping lays a tensor out as rows ``[groups, group_size]``; a scale per row.

Example:
    >>> import torch
    >>> g = Granularity.parse("block:2")
    >>> rows, layout = g.group(torch.arange(6.0).reshape(2, 3))
    >>> rows.tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    >>> g.ungroup(rows, layout).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("tensor", "channel", "block", "sorted")
VALID = "tensor | channel | channel:AXIS | block:N | sorted:N"


@dataclass(frozen=True)
class Layout:
    """How rows map back to the original tensor."""

    shape: torch.Size
    numel: int
    perm: torch.Tensor | None = None  # sorted: rows.flatten()[i] is x.flatten()[perm[i]]
    moved_shape: torch.Size | None = None  # channel: shape after moving the axis first


@dataclass(frozen=True)
class Granularity:
    kind: str = "tensor"
    axis: int = 0
    size: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown granularity {self.kind!r}; valid: {VALID}")
        if self.kind in ("block", "sorted") and not (isinstance(self.size, int) and self.size > 0):
            raise ValueError(f"{self.kind}:N needs a positive integer block size N, got {self.size!r}")

    @classmethod
    def parse(cls, spec: str | Granularity) -> Granularity:
        if isinstance(spec, Granularity):
            return spec
        kind, _, arg = str(spec).strip().lower().partition(":")
        if kind == "tensor" and not arg:
            return cls("tensor")
        if kind == "channel" and not arg:
            return cls("channel")
        if kind in ("channel", "block", "sorted") and arg.lstrip("-").isdigit():
            return cls("channel", axis=int(arg)) if kind == "channel" else cls(kind, size=int(arg))
        raise ValueError(f"bad granularity {spec!r}; valid: {VALID}")

    def __str__(self) -> str:
        if self.kind == "channel":
            return "channel" if self.axis == 0 else f"channel:{self.axis}"
        return f"{self.kind}:{self.size}" if self.kind in ("block", "sorted") else "tensor"

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, Layout]:
        """Rows ``[groups, group_size]`` of ``x`` (a view where possible) and the layout to undo it."""
        n = x.numel()
        if self.kind == "tensor":
            return x.reshape(1, -1), Layout(x.shape, n)
        if self.kind == "channel":
            if x.dim() == 0 or not -x.dim() <= self.axis < x.dim():
                raise ValueError(f"channel axis {self.axis} is out of range for a tensor of shape {tuple(x.shape)}")
            moved = x.movedim(self.axis, 0)
            return moved.reshape(moved.shape[0], -1), Layout(x.shape, n, moved_shape=moved.shape)
        if self.kind == "block" and x.dim() > 0 and x.shape[-1] % self.size == 0:
            return x.reshape(-1, self.size), Layout(x.shape, n)
        flat = x.reshape(-1)
        perm = None
        if self.kind == "sorted":
            perm = torch.sort(flat.abs(), stable=True).indices
            flat = flat[perm]
        pad = (-n) % self.size
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        return flat.reshape(-1, self.size), Layout(x.shape, n, perm=perm)

    def ungroup(self, rows: torch.Tensor, layout: Layout) -> torch.Tensor:
        """Inverse of :meth:`group` (``rows`` may have another dtype)."""
        if self.kind == "channel":
            return rows.reshape(layout.moved_shape).movedim(0, self.axis)
        flat = rows.reshape(-1)[: layout.numel]
        if layout.perm is not None:
            out = torch.empty_like(flat)
            out[layout.perm] = flat
            flat = out
        return flat.reshape(layout.shape)

    def index_bits(self, numel: int) -> int:
        """Bits of the stored permutation (sorted granularity), else 0."""
        return numel * max(1, math.ceil(math.log2(numel))) if self.kind == "sorted" and numel > 1 else 0
