"""The spec registry: a new family is one registration, the valid forms follow it, misses list them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

import dtypelab as dl
from dtypelab.formats import STANDARD_FORMATS, Format, registry
from dtypelab.formats.registry import (
    families,
    fmt,
    int_args,
    register_alias,
    register_family,
    register_pattern,
    valid_forms,
)


@dataclass(frozen=True, repr=False)
class Fixed(Format):
    """A toy family defined only in this test: n-bit two's complement with ``f`` fraction bits."""

    n: int
    f: int

    def __post_init__(self) -> None:
        if not (isinstance(self.n, int) and 2 <= self.n <= 12 and 0 <= self.f <= self.n):
            raise ValueError(f"fixed(n,f): need 2 <= n <= 12 and 0 <= f <= n, got n={self.n!r}, f={self.f!r}")

    @property
    def bits(self) -> int:
        return self.n

    def __str__(self) -> str:
        return f"fixed({self.n},{self.f})"

    def code_values(self) -> np.ndarray:
        codes = np.arange(1 << self.n)
        return np.where(codes >> (self.n - 1), codes - (1 << self.n), codes) / 2.0**self.f


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made in a test are undone after it."""
    r = registry._REGISTRY
    monkeypatch.setattr(registry, "_REGISTRY", type(r)(dict(r.families), list(r.patterns), dict(r.aliases)))


def _parse_fixed(args: list[str]) -> Fixed:
    return Fixed(*int_args(args, 2, "fixed"))


def test_a_new_family_is_one_registration(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="unknown format spec"):
        dl.fmt("fixed(4,1)")
    register_family("fixed", _parse_fixed, forms=("fixed(n,f)",))
    register_pattern(r"q(\d+)\.(\d+)", lambda a: Fixed(int(a[0]) + int(a[1]), int(a[1])), "qI.F")
    register_alias("fixed4", "fixed(4,1)")
    f = dl.fmt("Fixed(4, 1)")
    assert f == Fixed(4, 1) == dl.fmt("q3.1") == dl.fmt("fixed4") and dl.fmt(str(f)) == f
    assert f.quantize(torch.tensor([0.3, 0.25, 0.75, -9.0, 100.0])).tolist() == [0.5, 0.0, 1.0, -4.0, 3.5]
    assert f.encode(torch.tensor([-0.5])).tolist() == [15] and f.max == 3.5 and f.min_positive == 0.5
    assert "fixed" in families()
    for form in ("fixed(n,f)", "qI.F", "fixed4"):
        assert form in valid_forms() and form in dl.formats.VALID_FORMS and form in registry.VALID_FORMS
    with pytest.raises(ValueError, match=r"fixed\(n,f\)"):  # a miss lists the new family too
        dl.fmt("fixd(4,1)")
    with pytest.raises(ValueError, match="fixed"):
        dl.fmt("fixed(4)")


def test_registrations_are_checked(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_family("posit", _parse_fixed)
    with pytest.raises(ValueError, match="already registered"):
        register_alias("e4m3", "fp(4,3)")
    with pytest.raises(ValueError, match="family name"):
        register_family("9bad", _parse_fixed)
    with pytest.raises(ValueError, match="unknown format spec"):
        register_alias("mine", "no-such-format")


def test_the_scratch_registry_left_no_trace() -> None:
    assert "fixed" not in families() and "fixed" not in valid_forms()


def test_valid_forms_are_derived_from_the_registry() -> None:
    forms = valid_forms()
    assert dl.formats.VALID_FORMS == forms
    for name in families():
        assert f"{name}(" in forms, name
    for name in registry._REGISTRY.aliases:
        assert dl.fmt(name) == registry._REGISTRY.aliases[name]
        assert name in forms.split(" | ")


def test_a_miss_lists_the_known_forms() -> None:
    with pytest.raises(ValueError) as info:
        fmt("posit-ish")
    message = str(info.value)
    assert "'posit-ish'" in message
    for form in ("posit(n,es)", "lp(n,es,rs,sf)", "fp(e,m)", "eXmY", "intN", "e8m0", "codebook(v1,v2,...)"):
        assert form in message
    with pytest.raises(TypeError, match="string or Format"):
        fmt(8)


def test_standard_formats_parse_to_distinct_formats() -> None:
    formats = [dl.fmt(s) for s in STANDARD_FORMATS]
    assert len(set(formats)) == len(STANDARD_FORMATS)
    assert all(dl.fmt(str(f)) == f for f in formats)


def test_the_cli_lists_the_standard_formats() -> None:
    cli = pytest.importorskip("dtypelab.cli")
    assert cli.DEFAULT_FORMATS is STANDARD_FORMATS
