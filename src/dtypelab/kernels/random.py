"""Random bits for stochastic rounding: counter-based, so every backend and every chunking draws the same bits.

Element ``i`` (in the flat, contiguous order of the tensor) of one rounding call gets the 64-bit word
``splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15)`` (Steele, Lea and Flood's SplitMix64 finaliser), and a call
draws its ``seed`` from a ``torch.Generator`` (the global one by default, so ``torch.manual_seed`` makes runs
repeatable). A stochastic decision with ``K`` random bits reads the word's top ``K`` bits.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> seed = draw_seed(g)
    >>> w = words(seed, 4)
    >>> same = torch_words(seed, 4, torch.device("cpu")).numpy().view("uint64") == w
    >>> w.dtype.name, len(set(w.tolist())), bool(same.all())
    ('uint64', 4, True)
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A 64-bit seed (as a Python int in ``[0, 2^64)``) drawn from ``generator`` (default: torch's global one)."""
    device = generator.device if generator is not None else "cpu"
    hi, lo = torch.randint(0, 1 << 32, (2,), generator=generator, device=device, dtype=torch.int64).tolist()
    return hi << 32 | lo


@njit(inline="always")
def mix(seed, i):
    """The word of counter ``i`` (uint64 arithmetic, wrapping)."""
    z = seed + (i + np.uint64(1)) * np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


@njit(parallel=True, cache=True)
def _words(seed, out, offset):
    for i in prange(out.size):
        out[i] = mix(seed, np.uint64(offset + i))


def words(seed: int, n: int, offset: int = 0) -> np.ndarray:
    """The ``n`` uint64 words of counters ``offset .. offset + n - 1``."""
    out = np.empty(n, dtype=np.uint64)
    _words(np.uint64(seed), out, offset)
    return out


def _signed(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


def _shift_right(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 ``z`` (torch shifts arithmetically)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def torch_words(seed: int, n: int, device: torch.device, offset: int = 0) -> torch.Tensor:
    """:func:`words` with torch ops on ``device``: the same bits, as int64."""
    i = torch.arange(offset + 1, offset + n + 1, dtype=torch.int64, device=device)
    z = i * _signed(GOLDEN) + _signed(seed)  # int64 arithmetic wraps like uint64
    z = (z ^ _shift_right(z, 30)) * _signed(MIX1)
    z = (z ^ _shift_right(z, 27)) * _signed(MIX2)
    return z ^ _shift_right(z, 31)


__all__ = ["draw_seed", "mix", "words", "torch_words"]
