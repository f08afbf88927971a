"""accuracy_plot writes a real PNG, atomically, and rejects bad specs before writing."""

from __future__ import annotations

import numpy as np
import pytest

from dtypelab.report.plots import accuracy_plot, decimal_accuracy


def test_accuracy_plot_writes_a_png(tmp_path) -> None:
    out = accuracy_plot(["posit(8,1)", "lp(8,2,2,0)", "e4m3"], tmp_path / "sub" / "acc.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert [p.name for p in out.parent.iterdir()] == ["acc.png"]  # no temp file left behind


def test_accuracy_plot_bad_spec_writes_nothing(tmp_path) -> None:
    with pytest.raises(ValueError):
        accuracy_plot(["posit(1,0)"], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_decimal_accuracy_of_e2m1() -> None:
    x = np.array([1.25, 3.0])  # 1.25 -> 1.0 (ties to even), 3.0 exact
    acc = decimal_accuracy("e2m1", x)
    assert acc[0] == pytest.approx(-np.log10(np.log10(1.25))) and np.isinf(acc[1])
