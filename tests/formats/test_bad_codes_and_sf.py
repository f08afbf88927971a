"""Wide posits check their codes like the table formats; lp rejects sf whose values leave float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from formats_helpers import posit_value

import dtypelab as dl
from dtypelab.formats.lp import LogPosit


@pytest.mark.parametrize("spec", ["posit(32,2)", "posit(20,1)", "posit(17,0)", "posit(8,1)", "e4m3"])
@pytest.mark.parametrize(("codes", "error"), [
    (lambda bits: torch.tensor([-1]), ValueError),
    (lambda bits: torch.tensor([0, 1 << bits]), ValueError),
    (lambda bits: torch.tensor([1 << 40], dtype=torch.int64), ValueError),
    (lambda bits: torch.tensor([1.0, 2.0]), TypeError),
    (lambda bits: torch.tensor([True]), TypeError),
    (lambda bits: torch.tensor([1 + 0j]), TypeError),
    (lambda bits: [1, 2], TypeError),
])
def test_decode_rejects_bad_codes(spec: str, codes, error: type) -> None:
    f = dl.fmt(spec)
    with pytest.raises(error, match="codes must"):
        f.decode(codes(f.bits))


@pytest.mark.parametrize("spec", ["posit(32,2)", "posit(24,3)"])
def test_wide_posit_decode_checks_dtype_and_still_decodes(spec: str) -> None:
    f = dl.fmt(spec)
    with pytest.raises(TypeError, match="floating dtype"):
        f.decode(torch.tensor([1]), torch.int32)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1 << f.bits, 2000)
    got = f.decode(torch.from_numpy(codes), torch.float64).numpy()
    want = [posit_value(int(c), f.n, f.es) for c in codes]
    np.testing.assert_array_equal(got, [np.nan if w is None else float(w) for w in want])
    assert f.decode(torch.empty(0, dtype=torch.int64)).shape == (0,)


@pytest.mark.parametrize("spec", ["lp(8,2,2,1e308)", "lp(16,4,15,1000)", "lp(8,2,2,1015)", "lp(8,2,2,-1016)",
                                  "lp(8,2,2,inf)", "lp(8,2,2,-inf)", "lp(8,2,2,nan)", "lp(8,2,2,1e999)"])
def test_lp_rejects_sf_outside_float64_at_parse(spec: str) -> None:
    with pytest.raises(ValueError, match=r"sf must lie in \[-?\d"):
        dl.fmt(spec)


def test_lp_sf_bounds_are_the_float64_range() -> None:
    for sf, top, bottom in ((-1015.125, 2.0**1023, None), (1014.125, None, 2.0**-1022)):
        f = LogPosit(8, 2, 2, sf)  # the ends of the valid range: maxpos 2^1023 / minpos 2^-1022 exactly
        assert (f.max == top) if top else (f.min_positive == bottom)
        q = f.quantize(torch.tensor([1e-300, 1e300, -1.0], dtype=torch.float64))
        assert torch.isfinite(q).all() and (q != 0).all()
    with pytest.raises(ValueError, match="sf must lie in"):
        LogPosit(8, 2, 2, 10**400)  # an int too big for a float: no OverflowError
    with pytest.raises(TypeError, match="sf must be a real number"):
        LogPosit(8, 2, 2, "1")
