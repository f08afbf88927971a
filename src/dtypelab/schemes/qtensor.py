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
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from dtypelab._io import atomic_write
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
    def from_float(cls, x: torch.Tensor, scheme: Scheme | str, generator: torch.Generator | None = None) -> QTensor:
        """Quantize ``x`` (see :func:`quantize`)."""
        scheme = Scheme.parse(scheme)
        scaled = scheme.scale(x, generator=generator)
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
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | os.PathLike) -> QTensor:
        """Read a file written by :meth:`save`; a file that is not one (or disagrees with itself) raises
        ValueError naming the file and the field."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such QTensor file")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{path}: not a QTensor safetensors file ({err})") from None
        return cls._checked(path, meta, tensors)

    @classmethod
    def _checked(cls, path: Path, meta: dict[str, str], tensors: dict[str, torch.Tensor]) -> QTensor:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"{path}: field {field!r} {why}")

        for key in ("scheme", "shape", "dtype"):
            if key not in meta:
                raise bad(key, "is missing from the metadata (not a file written by QTensor.save)")
        for key in ("codes", "scales"):
            if key not in tensors:
                raise bad(key, "is missing (not a file written by QTensor.save)")
        try:
            scheme = Scheme.parse(meta["scheme"])
        except (ValueError, TypeError) as err:
            raise bad("scheme", f"does not parse: {err}") from None
        try:
            shape = torch.Size(json.loads(meta["shape"]))
        except (ValueError, TypeError):
            raise bad("shape", f"is not a list of sizes: {meta['shape']!r}") from None
        dtype = getattr(torch, meta["dtype"].removeprefix("torch."), None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise bad("dtype", f"is not a floating torch dtype: {meta['dtype']!r}")
        codes, scales, perm = tensors["codes"], tensors["scales"], tensors.get("perm")
        numel = shape.numel()
        want_bytes = -(-numel * scheme.format.bits // 8)
        if codes.dtype != torch.uint8 or codes.dim() != 1 or codes.numel() != want_bytes:
            raise bad("codes", f"must be {want_bytes} uint8 bytes for {numel} {scheme.format.bits}-bit codes, got "
                               f"{codes.numel()} {codes.dtype}")
        groups = scheme.granularity.num_groups(shape)
        if scales.dtype != torch.float64 or scales.dim() != 1 or scales.numel() != groups:
            raise bad("scales", f"must be {groups} float64 values for {scheme.granularity} of shape "
                                f"{tuple(shape)}, got {scales.numel()} {scales.dtype}")
        if scheme.granularity.index_bits(numel) and (perm is None or perm.shape != (numel,)
                                                     or not torch.equal(perm.sort().values, torch.arange(numel))):
            raise bad("perm", f"must be a permutation of {numel} indices for {scheme.granularity}")
        return cls(codes, scales, scheme, shape, dtype, perm)


def quantize(x: torch.Tensor, scheme: Scheme | str, generator: torch.Generator | None = None) -> QTensor:
    """Quantize ``x`` to its stored form (codes + scales) under ``scheme`` (a stochastic rounding draws from
    ``generator``)."""
    return QTensor.from_float(x, scheme, generator)
