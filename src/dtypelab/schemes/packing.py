"""Bit packing: a stream of ``width``-bit codes as bytes (most significant bit first).

Example:
    >>> import torch
    >>> packed = pack(torch.tensor([1, 2, 3, 0, 63]), 6)
    >>> packed.numel(), unpack(packed, 6, 5).tolist()   # 5 codes * 6 bits = 30 bits -> 4 bytes
    (4, [1, 2, 3, 0, 63])
"""

from __future__ import annotations

import numpy as np
import torch


def pack(codes: torch.Tensor, width: int, copy: bool = True) -> torch.Tensor:
    """Pack non-negative integer codes of ``width`` bits into a uint8 tensor of ``ceil(n*width/8)`` bytes; with
    ``copy=False``, 8-bit codes that are already uint8 on the CPU are returned as they are, not copied."""
    if width == 8 and codes.dtype == torch.uint8:  # already one code per byte
        flat = codes.detach().to("cpu").reshape(-1)
        return flat.clone() if copy else flat
    if width == 4:  # two codes per byte, the first in the high nibble
        c = codes.detach().to("cpu", torch.uint8).reshape(-1)
        c = torch.cat([c, c.new_zeros(1)]) if c.numel() % 2 else c
        return c[0::2] << 4 | c[1::2]
    c = codes.detach().to("cpu", torch.int64).reshape(-1).numpy()
    if width == 8:
        return torch.from_numpy(c.astype(np.uint8))
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    bits = ((c[:, None] >> shifts) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(bits.reshape(-1)))


def unpack(packed: torch.Tensor, width: int, count: int) -> torch.Tensor:
    """Inverse of :func:`pack`: ``count`` int64 codes."""
    p = packed.detach().to("cpu").numpy()
    if width == 8:
        return torch.from_numpy(p[:count].astype(np.int64))
    bits = np.unpackbits(p)[: count * width].reshape(count, width).astype(np.int64)
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    return torch.from_numpy(bits @ weights)
