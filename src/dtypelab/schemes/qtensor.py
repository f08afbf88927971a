"""QTensor: the real stored form of a quantized tensor — packed codes, scales, permutation — and its exact size.

``storage_bits`` = ``numel * format.bits`` (codes) + ``groups * scale_bits`` (scales) + the permutation of
``sorted:N`` granularity. Zero points are a constant of the scheme (``2^(n-1)`` for unsigned integers), not
stored per group. Padding of a short last block is not stored.

Example:
    >>> import torch, dtypelab as dl
    >>> qt = dl.quantize(torch.randn(4, 64), dl.Scheme.parse("mxfp8"))
    >>> qt.storage_bits / qt.numel          # 8 bits per element + one 8-bit E8M0 scale per 32
    8.25
    >>> qt.dequantize().shape
    torch.Size([4, 64])
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dtypelab.schemes.packing import pack, unpack
from dtypelab.schemes.scheme import Scheme


@dataclass(frozen=True)
class QTensor:
    codes: torch.Tensor  # uint8, packed bit stream of numel codes
    scales: torch.Tensor  # float64 [groups], the stored scale values
    scheme: Scheme
    shape: torch.Size
    dtype: torch.dtype
    perm: torch.Tensor | None = None  # sorted granularity only

    @property
    def numel(self) -> int:
        return self.shape.numel()

    @property
    def storage_bits(self) -> int:
        return self.scheme.storage_bits(self.shape, self.scales.numel())

    @property
    def bits_per_element(self) -> float:
        return self.storage_bits / max(self.numel, 1)

    @classmethod
    def from_float(cls, x: torch.Tensor, scheme: Scheme | str) -> QTensor:
        """Quantize ``x`` (see :func:`quantize`)."""
        scheme = Scheme.parse(scheme)
        scaled = scheme.scale(x)
        codes = scaled.encode()
        return cls(pack(codes, scheme.format.bits, copy=False), scaled.scales.cpu(), scheme, x.shape, x.dtype,
                   scaled.layout.perm)

    def dequantize(self) -> torch.Tensor:
        s = self.scheme
        codes = unpack(self.codes, s.format.bits, self.numel)
        values = s.format.decode(codes, torch.float64) - s.element_range.zero_point
        groups, size = s.granularity.rows_shape(self.shape)
        pad = groups * size - self.numel
        if pad:
            values = torch.cat([values, values.new_zeros(pad)])
        rows = values.reshape(groups, size) * self.scales[:, None]
        layout = replace(s.granularity.layout_for(self.shape), perm=self.perm)
        return s.granularity.ungroup(rows, layout).to(self.dtype)

    def save(self, path: str | os.PathLike) -> None:
        """Write to a safetensors file, atomically."""
        from safetensors.torch import save_file

        tensors = {"codes": self.codes.contiguous(), "scales": self.scales.contiguous()}
        if self.perm is not None:
            tensors["perm"] = self.perm.contiguous()
        meta = {"scheme": str(self.scheme), "shape": json.dumps(list(self.shape)), "dtype": str(self.dtype)}
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(tensors, tmp, metadata=meta)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> QTensor:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        dtype = getattr(torch, meta["dtype"].removeprefix("torch."))
        return cls(tensors["codes"], tensors["scales"], Scheme.parse(meta["scheme"]),
                   torch.Size(json.loads(meta["shape"])), dtype, tensors.get("perm"))


def quantize(x: torch.Tensor, scheme: Scheme | str) -> QTensor:
    """Quantize ``x`` to its stored form (codes + scales) under ``scheme``."""
    return QTensor.from_float(x, scheme)
