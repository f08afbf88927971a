"""Unsigned dynamic tree UDT(n): against the formula computed here (bitsandbytes' unsigned map), and its rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dtypelab as dl


def unsigned_tree_formula(n: int) -> np.ndarray:
    """10^(i-(n-2)) * (0.1 + 0.9*(j+0.5)/2^(i+1)), i = 0..n-2, j = 0..2^(i+1)-1, plus 0 and 1.0 (float64)."""
    vals = [0.0, 1.0]
    for i in range(n - 1):
        for j in range(2 ** (i + 1)):
            vals.append(10.0 ** (i - (n - 2)) * (0.1 + 0.9 * (j + 0.5) / 2 ** (i + 1)))
    return np.sort(np.array(vals))


@pytest.mark.parametrize("n", range(3, 9))
def test_unsigned_tree_matches_formula(n: int) -> None:
    f = dl.fmt(f"udt({n})")
    ours = f.values().numpy()
    ref = unsigned_tree_formula(n)
    assert ours.size == ref.size == 2**n and f.bits == n
    assert np.all(np.diff(ours) > 0) and ours[0] == 0.0 and ours[-1] == 1.0
    ulp32 = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.all(np.abs(ours - ref) <= 2 * ulp32)
    assert np.all(ours == ours.astype(np.float32))
    assert str(f) == f"udt{n}" and dl.fmt(f"udt{n}") == f


def test_unsigned_tree_rounds_to_nearest_and_negatives_to_zero() -> None:
    f = dl.fmt("udt8")
    v = f.values()
    mids = ((v[:-1] + v[1:]) / 2).float()
    below, above = torch.nextafter(mids, torch.tensor(-1.0)), torch.nextafter(mids, torch.tensor(2.0))
    assert torch.equal(f.quantize(below).double(), v[:-1])
    assert torch.equal(f.quantize(above).double(), v[1:])
    assert f.quantize(torch.tensor([-0.5, -1e-9])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("bad", ["udt(2)", "udt(9)", "udt(8,1)"])
def test_bad_unsigned_tree(bad: str) -> None:
    with pytest.raises(ValueError, match="udt"):
        dl.fmt(bad)
