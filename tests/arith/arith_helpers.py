"""Shared helpers of the arith tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from dtypelab.arith import Compute


@contextmanager
def recorded_matmuls() -> Iterator[list[tuple[tuple[int, ...], tuple[int, ...]]]]:
    """The operand shapes of every ``Compute.matmul`` call made while the block runs (the real one still runs)."""
    calls: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = Compute.matmul

    def spy(self, a, b, *args, **kwargs):
        calls.append((tuple(a.shape), tuple(b.shape)))
        return real(self, a, b, *args, **kwargs)

    Compute.matmul = spy
    try:
        yield calls
    finally:
        Compute.matmul = real
