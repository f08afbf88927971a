"""Reading the scheme of one training tensor: a spec, a :class:`~dtypelab.schemes.Scheme`, or FP32 (None)."""

from __future__ import annotations

from typing import Any

from dtypelab.schemes import Scheme

FP32_WORDS = ("fp32", "float32", "none", "null", "float")


def scheme_or_none(value: Any, what: str) -> Scheme | None:
    """The scheme ``value`` names, or None for FP32 (``None`` or one of :data:`FP32_WORDS`); a spec that does not
    parse raises ValueError naming ``what`` it was for.

    Example:
        >>> scheme_or_none("fp32", "weight") is None
        True
        >>> str(scheme_or_none("dt8/block:256/absmax", "exp_avg"))
        'dt8/block:256/absmax'
    """
    if value is None or isinstance(value, str) and value.strip().lower() in FP32_WORDS:
        return None
    try:
        return Scheme.parse(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{what}: scheme {value!r} does not parse ({err}); give FORMAT[/GRANULARITY[/SCALE"
                         "[/SCALE_FORMAT[/ROUNDING]]]] such as 'bf16/tensor/none//sr', or fp32") from None
