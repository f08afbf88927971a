"""The config side of simulated arithmetic: a layer's ``compute:`` value and the ``ops:`` rules (validated here,
attached by :mod:`dtypelab.arith.ops`).

Example:
    >>> OpRule(match="LayerNorm", output="bfloat16").output
    'bf16'
    >>> compute_spec({"accumulator": "align:13", "chunk": 128})
    {'accumulator': 'align:13', 'chunk': 128}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from dtypelab._patterns import check_match
from dtypelab.arith.compute import Compute
from dtypelab.arith.numbers import rounder
from dtypelab.schemes import Scheme

#: the layer kinds whose dot products a ``compute:`` simulates (``Conv1D``: transformers' GPT-2 linear layer,
#: weight stored ``(in, out)``: :data:`dtypelab.model.methods.TRANSPOSED`)
COMPUTE_KINDS = ("Linear", "Conv1d", "Conv2d", "Conv1D")


# ---- config ------------------------------------------------------------------------------------------------------


def compute_spec(v: Any) -> dict[str, Any] | None:
    """Validate a ``compute:`` value into its canonical dict (None: FP32 arithmetic)."""
    if v is None:
        return None
    return Compute.parse(v).to_dict()


class OpRule(BaseModel):
    """One ``ops:`` rule: the modules ``match`` selects and what their results are rounded to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str
    output: str | None = None
    softmax: str | None = None
    residual: str | None = None
    compute: dict[str, Any] | None = None
    operands: str | None = None

    @field_validator("output", "softmax", "residual", mode="before")
    @classmethod
    def _formats(cls, v: Any) -> str | None:
        return None if v is None else rounder(str(v)).spec

    @field_validator("compute", mode="before")
    @classmethod
    def _compute(cls, v: Any) -> dict[str, Any] | None:
        return compute_spec(v)

    @field_validator("operands", mode="before")
    @classmethod
    def _operands(cls, v: Any) -> str | None:
        return None if v is None else str(Scheme.parse(v))

    @field_validator("match")
    @classmethod
    def _match(cls, v: str) -> str:
        return check_match(v, "ops match", "a glob on the module name, 're:REGEX' or a class name")

    def fields(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("output", "softmax", "residual", "compute", "operands")
                if k in self.model_fields_set}



__all__ = ["OpRule", "compute_spec", "COMPUTE_KINDS"]
