"""Scheme = format + granularity + scale rule + how scales are stored + rounding, and the one quantize pipeline.

Canonical string: ``FORMAT/GRANULARITY/SCALE[/SCALE_FORMAT[/ROUNDING]]`` (``SCALE_FORMAT`` only when it is not the
rule's default, ``ROUNDING`` only when it is not ``rne``; an empty ``SCALE_FORMAT`` means the default), e.g.
``posit(6,1)/channel/log2-hist``, ``nf4/block:64/absmax``, ``e4m3/block:32/mx``, ``e4m3/tensor/absmax//sr8``
(stochastic rounding with 8 random bits: :mod:`dtypelab.kernels.rounding`). A bare format means
``FORMAT/tensor/none``. Aliases: ``mxfp8``, ``mxfp6``, ``mxfp4``, ``mxint8``, ``nvfp4``.

Scales multiply: ``x ≈ Q(x / s) * s`` (for unsigned integers ``(Q(x / s + zp) - zp) * s`` with
``zp = 2^(n-1)``). Scale formats (:mod:`~dtypelab.schemes.scale_storage`): ``none`` (no scale stored), ``fp32``,
``e8m0`` (the default for ``pow2`` and the ``mx`` rules), or any format spec (e.g. ``e4m3``), optionally relative to one
float32 scale per tensor (``e4m3+fp32``, NVIDIA's NVFP4).

Every caller quantizes through :meth:`Scheme.scale`, which groups the tensor, computes (or takes) the stored
scales and returns a :class:`Scaled` whose :meth:`~Scaled.dequantize`, :meth:`~Scaled.encode` and
:meth:`~Scaled.values` do the rest; the fused block kernels are taken there, where the device's backend has one.

Example:
    >>> import torch, dtypelab as dl
    >>> s = dl.Scheme(format="posit(6,1)", granularity="channel", scale="log2-energy")
    >>> str(s), dl.Scheme.parse(str(s)) == s
    ('posit(6,1)/channel/log2-energy', True)
    >>> str(dl.Scheme.parse("mxfp8"))
    'e4m3/block:32/mx'
    >>> sc = dl.Scheme.parse("int4/tensor/absmax").scale(torch.tensor([0.3, 5.0, -7.0]))
    >>> sc.scales.tolist(), sc.values().tolist(), sc.dequantize().tolist()
    ([1.0], [0.0, 5.0, -7.0], [0.0, 5.0, -7.0])
    >>> str(dl.Scheme("e4m3", "channel", "absmax", rounding="stochastic8+ovfinf"))
    'e4m3/channel/absmax//sr8+ovfinf'
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from dtypelab.formats import Format, fmt
from dtypelab.kernels.backend import BlockRule
from dtypelab.kernels.engine import check_input
from dtypelab.kernels.rounding import DEFAULT, Rounding
from dtypelab.schemes.granularity import Granularity, Layout, PerTensor
from dtypelab.schemes.granularity import granularity as granularity_of
from dtypelab.schemes.scale_storage import NONE, ScaleStorage, scale_storage
from dtypelab.schemes.scales import ElementRange, ScaleRule, element_range, scale_rule

ALIASES = {
    "mxfp8": "e4m3/block:32/mx", "mxfp8_e5m2": "e5m2/block:32/mx", "mxfp6": "e3m2/block:32/mx",
    "mxfp6_e2m3": "e2m3/block:32/mx", "mxfp4": "e2m1/block:32/mx", "mxint8": "int8/block:32/mx",
    "nvfp4": "e2m1/block:16/absmax/e4m3+fp32",
}


@dataclass(frozen=True, init=False)
class Scheme:
    """How a tensor is quantized: ``Scheme(format, granularity="tensor", scale="none", scale_format="",
    rounding=None)``, each part a spec string or its object; ``scale_format`` empty means the rule's default
    storage, ``rounding`` None the format's nearest-even rounding."""

    format: Format
    granularity: Granularity
    rule: ScaleRule
    storage: ScaleStorage
    rounding: Rounding

    def __init__(self, format: Format | str, granularity: Granularity | str = "tensor",
                 scale: ScaleRule | str = "none", scale_format: ScaleStorage | Format | str = "",
                 rounding: Rounding | str | None = None) -> None:
        rule = scale_rule(scale)
        storage = scale_storage(scale_format or rule.default_storage)
        object.__setattr__(self, "format", fmt(format))
        object.__setattr__(self, "granularity", granularity_of(granularity))
        object.__setattr__(self, "rule", rule)
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "rounding", Rounding.parse(rounding))
        self.format.engine_for(self.rounding)  # a rounding the format cannot have is refused here
        if (storage == NONE) != (rule.default_storage == "none"):
            raise ValueError(f"scale_format 'none' goes with scale 'none' only (got scale={rule}, "
                             f"scale_format={storage})")
        rule.check(self.format, self.granularity)

    @classmethod
    def parse(cls, spec: str | Scheme) -> Scheme:
        """Parse ``FORMAT[/GRANULARITY[/SCALE[/SCALE_FORMAT[/ROUNDING]]]]`` or an alias."""
        if isinstance(spec, Scheme):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"a scheme spec must be a string or Scheme, got {type(spec).__name__}")
        text = spec.strip().lower().replace(" ", "")
        parts = ALIASES.get(text, text).split("/")
        if len(parts) > 5 or not parts[0]:
            raise ValueError(f"bad scheme {spec!r}: expected FORMAT[/GRANULARITY[/SCALE[/SCALE_FORMAT[/ROUNDING]]]], "
                             "e.g. 'posit(6,1)/channel/log2-hist' or 'e4m3/tensor/absmax//sr8', or one of "
                             + ", ".join(ALIASES))
        return cls(*parts)

    def __str__(self) -> str:
        text = f"{self.format}/{self.granularity}/{self.rule}"
        default_storage = self.storage == scale_storage(self.rule.default_storage)
        if not default_storage or self.rounding != DEFAULT:
            text += "/" + ("" if default_storage else str(self.storage))
        if self.rounding != DEFAULT:
            text += f"/{self.rounding}"
        return text

    @property
    def element_range(self) -> ElementRange:
        return element_range(self.format)

    @property
    def scale_bits(self) -> int:
        """Bits stored per scale."""
        return self.storage.bits

    @property
    def has_scales(self) -> bool:
        """Whether scales are stored (every rule but ``none``)."""
        return self.storage != NONE

    @property
    def static(self) -> bool:
        """Whether its scales can be fixed once at calibration (not recomputed for each input)."""
        return self.granularity.static and self.rule.static

    def storage_bits(self, shape: torch.Size, groups: int | None = None) -> int:
        """Exact stored size of a tensor of ``shape``: codes + ``groups`` scales (by default the granularity's
        count) + stored indices. Zero points are a constant of the scheme; block padding is not stored."""
        numel = torch.Size(shape).numel()
        groups = self.granularity.num_groups(torch.Size(shape)) if groups is None else groups
        scales = groups * self.storage.bits + (self.storage.tensor_bits if groups else 0)
        return numel * self.format.bits + scales + self.granularity.index_bits(numel)

    # ---- the pipeline -------------------------------------------------------------------------------------------

    def scale(self, x: torch.Tensor, scales: torch.Tensor | None = None,
              generator: torch.Generator | None = None) -> Scaled:
        """``x`` grouped and scaled: scales from ``x`` by the rule (dynamic), or the given stored ``scales``
        (static: one per group, or one for all); a stochastic rounding draws from ``generator``."""
        return Scaled(self, x, scales, generator)

    def round_scaled(self, t: torch.Tensor, out: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """Q of already-scaled values under the scheme's rounding, in the format's units and ``t``'s dtype (clipped
        to ±max first where the rule clips; the zero point added and taken off again); ``out`` may be ``t``."""
        rng = self.element_range
        if self.rule.clips:
            t = t.clamp(-rng.max, rng.max)
        quantize = self.format.engine_for(self.rounding).quantize
        if rng.zero_point:
            return quantize(t + rng.zero_point, out, generator).sub_(rng.zero_point)
        return quantize(t, out, generator)

    def row_scales(self, rows: torch.Tensor) -> torch.Tensor:
        """Stored scales ``[groups]`` (float64) of rows, by the rule, then rounded to the scale storage.
        Non-finite elements set no scale (they count as zeros), except under rules that make it NaN."""
        rows = rows.detach() if self.rule.native_dtype else rows.detach().to(torch.float64)
        if rows.numel() == 0:  # nothing to measure: unit scales
            return self.storage.store(torch.ones(rows.shape[0], dtype=torch.float64, device=rows.device))
        if not self.rule.native_dtype and not self.rule.nonfinite_is_nan and not bool(torch.isfinite(rows).all()):
            rows = torch.where(torch.isfinite(rows), rows, 0.0)
        s = self.rule.scales(rows, self.element_range, self.round_scaled)
        return s if self.rule.stored_exact else self.storage.store(s)

    def compute_scales(self, x: torch.Tensor) -> torch.Tensor:
        """Stored scales of ``x``'s groups, shaped as :meth:`Granularity.scale_shape` says (0-d per tensor,
        broadcastable along the axis per channel, ``[groups]`` per block)."""
        return self.scale(x).scales.reshape(self.granularity.scale_shape(x.shape))

    def block_rule(self) -> BlockRule | None:
        """What a fused block kernel needs, where the rule has one and the scales keep its default storage."""
        if self.rule.fused is None or self.storage != scale_storage(self.rule.default_storage):
            return None
        rng = self.element_range
        return BlockRule(self.rule.fused, rng.max, rng.emax if self.rule.clips else 0, rng.unit, rng.zero_point,
                         self.rule.clips, rng.mbits or 0)


STATIC_BLOCK = 1 << 14  # elements per work item of the fused static-scale pass (one scale for all)


class Scaled:
    """A tensor under a scheme, on the way to its stored form: rows ``[groups, size]`` and one stored scale per
    row. Made by :meth:`Scheme.scale`; everything is computed on first use.

    The working dtype is float64 for float64 inputs, else float32 (half-precision inputs are rounded in float32,
    which holds them exactly).
    """

    def __init__(self, scheme: Scheme, x: torch.Tensor, scales: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> None:
        check_input(x)
        self.scheme, self.x, self.generator = scheme, x, generator
        self.static = scales
        self.work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32

    @cached_property
    def _grouped(self) -> tuple[torch.Tensor, Layout]:
        return self.scheme.granularity.group(self.x.detach().to(self.work_dtype))

    @property
    def rows(self) -> torch.Tensor:
        return self._grouped[0]

    @property
    def layout(self) -> Layout:
        return self._grouped[1]

    @cached_property
    def scales(self) -> torch.Tensor:
        """Stored scales, float64 ``[groups]`` (``[1]`` for static scales shared by every group)."""
        if self.static is None:
            return self.scheme.row_scales(self.rows)
        s = self.static.detach().reshape(-1).to(torch.float64)
        if s.numel() not in (1, self.rows.shape[0]):
            raise ValueError(f"scales hold {s.numel()} values but {self.scheme.granularity} makes "
                             f"{self.rows.shape[0]} groups of this tensor of shape {tuple(self.x.shape)}")
        return s

    @property
    def divisor(self) -> torch.Tensor:
        """The scales in the working dtype, shaped to divide the rows."""
        return self.scales.to(self.rows.device, self.work_dtype)[:, None]

    @property
    def unit_scales(self) -> bool:
        """Every scale is 1 by construction (rule ``none``, no static scales): dividing changes nothing."""
        return self.static is None and self.scheme.storage == NONE

    def scaled(self) -> torch.Tensor:
        """``rows / s`` (a new tensor, in the working dtype)."""
        return self.rows.clone() if self.unit_scales else self.rows / self.divisor

    def values(self) -> torch.Tensor:
        """``Q(x / s)`` in the format's units (zero point taken off), in ``x``'s shape and the working dtype."""
        t = self.scaled()
        return self.scheme.granularity.ungroup(self.scheme.round_scaled(t, t, self.generator), self.layout)

    def dequantize(self) -> torch.Tensor:
        """``Q(x / s) * s`` in ``x``'s shape and dtype (the fake-quantized tensor)."""
        fast = self._fused(want_codes=False) if self.static is None else self._fused_static()
        if fast is not None:
            return fast.view(self.x.shape)
        if self.unit_scales:
            q = self.scheme.round_scaled(self.rows, generator=self.generator)
        else:
            t = self.rows / self.divisor
            q = self.scheme.round_scaled(t, t if t.is_contiguous() else None, self.generator).mul_(self.divisor)
        return self.scheme.granularity.ungroup(q, self.layout).to(self.x.dtype)

    def encode(self) -> torch.Tensor:
        """The codes of ``Q(x / s)``, flat, in the rows' order (``x``'s own order except per axis != 0, and
        sorted granularity, whose rows are permuted); padding is not encoded."""
        fast = self._fused(want_codes=True)
        if fast is not None:
            return fast
        t = self.rows / self.divisor
        rng = self.scheme.element_range
        if self.scheme.rule.clips:
            t = t.clamp(-rng.max, rng.max)
        if self.scheme.rule.nonfinite_is_nan:  # a NaN scale decodes its whole group to NaN: store zeros there
            t = torch.where(torch.isnan(self.divisor), 0.0, t)
        if rng.zero_point:  # (adding a zero point of 0 would turn -0.0 into +0.0, unlike the fused kernels)
            t = t + rng.zero_point
        codes = self.scheme.format.encode(t, rounding=self.scheme.rounding, generator=self.generator)
        return codes.reshape(-1)[: self.layout.numel]

    def _fused(self, want_codes: bool) -> torch.Tensor | None:
        """The fused block kernel's result, where the device's backend has one for this scheme (it also sets
        :attr:`scales`); None otherwise. Bit-identical to the generic path."""
        scheme = self.scheme
        size = scheme.granularity.contiguous_group_size(self.x)
        rule = scheme.block_rule()
        if self.static is not None or size is None or rule is None or "scales" in self.__dict__ \
                or (self.x.requires_grad and not want_codes):
            return None
        fast = scheme.format.engine_for(scheme.rounding).block(self.x, size, rule, want_codes)
        if fast is None:
            return None
        out, scales, nan_blocks = fast
        if want_codes and scheme.rule.nonfinite_is_nan:  # as the generic path: zeros in NaN-scaled blocks
            nan_scaled = torch.isnan(scales).repeat_interleave(size)[: out.numel()]  # (no host round trip)
            out = torch.where(nan_scaled, torch.tensor(self._zero_code(), dtype=out.dtype, device=out.device), out)
        elif want_codes and scheme.format.nan_code is None and nan_blocks:
            raise ValueError(f"{scheme.format} has no NaN code, but the input holds NaN value(s)")
        self.__dict__["scales"] = scales.double()
        return out

    def _fused_static(self) -> torch.Tensor | None:
        """``Q(x / s) * s`` in one pass for one static scale per tensor (float32), where the device's backend fuses
        it (a static activation quantizer's every forward); None otherwise. Bit-identical to the generic path."""
        scheme, x, s = self.scheme, self.x, self.static
        if s.numel() != 1 or x.dtype != torch.float32 or x.requires_grad or not x.is_contiguous() \
                or not isinstance(scheme.granularity, PerTensor):
            return None
        rng = scheme.element_range
        rule = BlockRule("given", rng.max, 0, rng.unit, rng.zero_point, scheme.rule.clips, rng.mbits or 0)
        size = STATIC_BLOCK
        given = s.detach().reshape(1).to(torch.float32).expand((x.numel() + size - 1) // size)
        fast = scheme.format.engine_for(scheme.rounding).block(x, size, rule, False, given)
        return None if fast is None else fast[0].view(x.shape)

    def _zero_code(self) -> int:
        zero = torch.tensor([self.scheme.element_range.zero_point], dtype=self.work_dtype)
        return int(self.scheme.format.encode(zero)[0])


__all__ = ["Scheme", "Scaled", "ALIASES"]
