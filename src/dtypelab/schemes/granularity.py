"""Granularity: which elements share one scale. One frozen dataclass per kind, each owning how it groups a
tensor into rows ``[groups, group_size]`` (one scale per row), how it undoes that, the shape its scales take
beside the tensor, and the index bits it stores.

* :class:`PerTensor` (``tensor``) — one scale for the whole tensor; scales are 0-d;
* :class:`PerAxis` (``channel`` / ``channel:AXIS``) — one scale per index along AXIS (default 0: the output
  channel of a Linear/Conv weight, i.e. row-wise); scales broadcast along that axis, e.g. ``[C, 1, 1, 1]``;
* :class:`PerBlock` (``block:N``) — contiguous blocks of N along the last axis when N divides it, otherwise
  contiguous blocks of N of the flattened tensor (the last one padded with zeros, which are not stored);
  scales are ``[groups]``;
* :class:`SortedBlock` (``sorted:N``) — seed 002's "stable embedding": groups of N elements of consecutive
  magnitude (a stable sort of ``|x|``); the permutation is stored and counted, ``ceil(log2(numel))`` bits per
  element; scales are ``[groups]``.

A new granularity is one class here, registered with :func:`register_granularity`.

Example:
    >>> import torch
    >>> g = Granularity.parse("block:2")
    >>> rows, layout = g.group(torch.arange(6.0).reshape(2, 3))
    >>> rows.tolist()
    [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    >>> g.ungroup(rows, layout).shape, str(g), g == PerBlock(2)
    (torch.Size([2, 3]), 'block:2', True)
    >>> PerAxis(0).scale_shape(torch.Size([8, 3, 3]))
    (8, 1, 1)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

MAX_GROUP_SIZE = 1 << 40  # beyond any tensor a machine holds; larger block sizes are typos


@dataclass(frozen=True)
class Layout:
    """How rows map back to the original tensor."""

    shape: torch.Size
    numel: int
    perm: torch.Tensor | None = None  # sorted: rows.flatten()[i] is x.flatten()[perm[i]]
    moved_shape: torch.Size | None = None  # per axis: shape after moving the axis first


class Granularity:
    """Base of the granularities (frozen dataclasses with a canonical ``str``, parsed back by :meth:`parse`)."""

    name: ClassVar[str]
    static: ClassVar[bool] = True  # its scales can be fixed once at calibration (not per input)

    @staticmethod
    def parse(spec: str | Granularity) -> Granularity:
        """``tensor``, ``channel``, ``channel:AXIS``, ``block:N`` or ``sorted:N`` (or a Granularity)."""
        return granularity(spec)

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, Layout]:
        """Rows ``[groups, group_size]`` of ``x`` (a view where possible) and the layout to undo it."""
        raise NotImplementedError

    def ungroup(self, rows: torch.Tensor, layout: Layout) -> torch.Tensor:
        """Inverse of :meth:`group` (``rows`` may have another dtype)."""
        flat = rows.reshape(-1)[: layout.numel]
        return flat.reshape(layout.shape)

    def rows_shape(self, shape: torch.Size) -> tuple[int, int]:
        """``(groups, group_size)`` of the rows a tensor of ``shape`` is laid out as."""
        groups, size = self.group(torch.empty(shape, device="meta"))[0].shape
        return groups, size

    def num_groups(self, shape: torch.Size) -> int:
        """How many scales a tensor of ``shape`` gets."""
        return self.rows_shape(shape)[0]

    def scale_shape(self, shape: torch.Size) -> tuple[int, ...]:
        """The shape of a tensor's scales as :meth:`dtypelab.Scheme.compute_scales` returns them: 0-d per tensor,
        broadcastable against the tensor per axis, ``[groups]`` per block."""
        return (self.num_groups(shape),)

    def layout_for(self, shape: torch.Size) -> Layout:
        """The layout :meth:`group` gives a tensor of ``shape`` (to ungroup stored rows without the tensor)."""
        return self.group(torch.empty(shape, device="meta"))[1]

    def contiguous_group_size(self, x: torch.Tensor) -> int | None:
        """The size of ``x``'s groups when they are consecutive runs of its flattened elements (the fused block
        kernels need that), else None."""
        return None

    def index_bits(self, numel: int) -> int:
        """Bits of stored indices (the permutation of sorted granularity), else 0."""
        return 0


@dataclass(frozen=True)
class PerTensor(Granularity):
    """One scale for the whole tensor."""

    name: ClassVar[str] = "tensor"

    def __str__(self) -> str:
        return "tensor"

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, Layout]:
        return x.reshape(1, -1), Layout(x.shape, x.numel())

    def scale_shape(self, shape: torch.Size) -> tuple[int, ...]:
        return ()

    def layout_for(self, shape: torch.Size) -> Layout:
        return Layout(torch.Size(shape), torch.Size(shape).numel())


@dataclass(frozen=True)
class PerAxis(Granularity):
    """One scale per index along ``axis``."""

    axis: int = 0
    name: ClassVar[str] = "channel"

    def __post_init__(self) -> None:
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ValueError(f"channel:AXIS needs an integer axis, got {self.axis!r}")

    def __str__(self) -> str:
        return "channel" if self.axis == 0 else f"channel:{self.axis}"

    def _check(self, ndim: int, shape: tuple[int, ...]) -> None:
        if ndim == 0 or not -ndim <= self.axis < ndim:
            raise ValueError(f"channel axis {self.axis} is out of range for a tensor of shape {shape}")

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, Layout]:
        self._check(x.dim(), tuple(x.shape))
        moved = x.movedim(self.axis, 0)
        rows = moved.reshape(moved.shape[0], math.prod(moved.shape[1:]))  # (not -1: it may be an empty tensor)
        return rows, Layout(x.shape, x.numel(), moved_shape=moved.shape)

    def ungroup(self, rows: torch.Tensor, layout: Layout) -> torch.Tensor:
        return rows.reshape(layout.moved_shape).movedim(0, self.axis)

    def num_groups(self, shape: torch.Size) -> int:
        self._check(len(shape), tuple(shape))
        return shape[self.axis]

    def scale_shape(self, shape: torch.Size) -> tuple[int, ...]:
        self._check(len(shape), tuple(shape))
        out = [1] * len(shape)
        out[self.axis] = shape[self.axis]
        return tuple(out)

    def layout_for(self, shape: torch.Size) -> Layout:
        self._check(len(shape), tuple(shape))
        axis = self.axis % len(shape)
        moved = torch.Size([shape[axis]]) + torch.Size(d for i, d in enumerate(shape) if i != axis)
        return Layout(torch.Size(shape), torch.Size(shape).numel(), moved_shape=moved)

    def contiguous_group_size(self, x: torch.Tensor) -> int | None:
        if self.axis == 0 and x.dim() >= 1 and x.shape[0] > 0:
            return x.numel() // x.shape[0]
        return None


def _padded_rows(flat: torch.Tensor, size: int) -> torch.Tensor:
    pad = (-flat.numel()) % size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.reshape(-1, size)


@dataclass(frozen=True)
class _Sized(Granularity):
    """Groups of ``size`` elements, whatever the tensor's shape (the last one padded with zeros)."""

    size: int
    static: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 < self.size <= MAX_GROUP_SIZE:
            raise ValueError(f"{self.name}:N needs a positive integer block size N (at most 2^40), got {self.size!r}")

    def __str__(self) -> str:
        return f"{self.name}:{self.size}"

    def num_groups(self, shape: torch.Size) -> int:
        return -(-torch.Size(shape).numel() // self.size)


@dataclass(frozen=True)
class PerBlock(_Sized):
    """Contiguous blocks of ``size`` elements (see the module docstring)."""

    name: ClassVar[str] = "block"

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, Layout]:
        if x.dim() > 0 and x.shape[-1] % self.size == 0:
            return x.reshape(-1, self.size), Layout(x.shape, x.numel())
        return _padded_rows(x.reshape(-1), self.size), Layout(x.shape, x.numel())

    def layout_for(self, shape: torch.Size) -> Layout:
        return Layout(torch.Size(shape), torch.Size(shape).numel())

    def contiguous_group_size(self, x: torch.Tensor) -> int | None:
        return self.size


@dataclass(frozen=True)
class SortedBlock(_Sized):
    """Groups of ``size`` elements of consecutive magnitude, with the permutation stored."""

    name: ClassVar[str] = "sorted"

    def group(self, x: torch.Tensor) -> tuple[torch.Tensor, Layout]:
        flat = x.reshape(-1)
        perm = torch.sort(flat.abs(), stable=True).indices
        return _padded_rows(flat[perm], self.size), Layout(x.shape, x.numel(), perm=perm)

    def ungroup(self, rows: torch.Tensor, layout: Layout) -> torch.Tensor:
        flat = rows.reshape(-1)[: layout.numel]
        out = torch.empty_like(flat)
        out[layout.perm] = flat
        return out.reshape(layout.shape)

    def index_bits(self, numel: int) -> int:
        return numel * max(1, math.ceil(math.log2(numel))) if numel > 1 else 0


GRANULARITIES: dict[str, Callable[[str], Granularity]] = {}
FORMS: dict[str, str] = {}  # name -> the forms it accepts, for error messages


def register_granularity(name: str, form: str, parse: Callable[[str], Granularity]) -> None:
    """Make ``name[:ARG]`` parse with ``parse(ARG)`` (ARG is '' when absent)."""
    GRANULARITIES[name] = parse
    FORMS[name] = form


def _valid() -> str:
    return " | ".join(FORMS.values())


def _int_arg(kind: str, arg: str, default: int | None = None) -> int:
    if not arg and default is not None:
        return default
    if not arg.lstrip("-").isdigit():
        raise ValueError(f"bad granularity '{kind}:{arg}'; valid: {_valid()}")
    return int(arg)


def _per_tensor(arg: str) -> PerTensor:
    if arg:
        raise ValueError(f"bad granularity 'tensor:{arg}': tensor takes no argument; valid: {_valid()}")
    return PerTensor()


register_granularity("tensor", "tensor", _per_tensor)
register_granularity("channel", "channel | channel:AXIS", lambda arg: PerAxis(_int_arg("channel", arg, 0)))
register_granularity("block", "block:N", lambda arg: PerBlock(_int_arg("block", arg)))
register_granularity("sorted", "sorted:N", lambda arg: SortedBlock(_int_arg("sorted", arg)))


def granularity(spec: str | Granularity) -> Granularity:
    """Parse a granularity spec (see the module docstring); a Granularity passes through."""
    if isinstance(spec, Granularity):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a granularity spec must be a string or Granularity, got {type(spec).__name__}")
    kind, _, arg = spec.strip().lower().partition(":")
    if kind not in GRANULARITIES:
        raise ValueError(f"bad granularity {spec!r}; valid: {_valid()}")
    return GRANULARITIES[kind](arg)


__all__ = ["Granularity", "PerTensor", "PerAxis", "PerBlock", "SortedBlock", "Layout", "granularity",
           "register_granularity", "GRANULARITIES"]
