"""accuracy_plot writes a real PNG, atomically, and rejects bad specs before writing; its worst-case envelope is
exact; each format keeps one colour."""

from __future__ import annotations

import numpy as np
import pytest

from dtypelab.report.plots import accuracy_envelope, accuracy_plot, decimal_accuracy


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


@pytest.mark.parametrize("spec", ["e4m3", "e5m2", "int8", "e2m1"])
def test_envelope_of_round_to_nearest_formats_is_the_midpoint_error(spec) -> None:
    """Round-to-nearest switches at the midpoint: the worst relative error of [v_i, v_i+1] is log10(m / v_i)."""
    from dtypelab.formats import fmt

    v = fmt(spec).values().numpy()
    v = v[v > 0]
    mid = (v[:-1] + v[1:]) / 2
    edges, worst = accuracy_envelope(spec)
    np.testing.assert_allclose(edges, np.log2(v))
    np.testing.assert_allclose(worst, -np.log10(np.log10(mid / v[:-1])), rtol=1e-9)


@pytest.mark.parametrize("spec", ["posit(6,1)", "posit(8,0)", "lp(6,1,2,0)", "e3m2"])
def test_envelope_bounds_every_point_and_is_reached(spec) -> None:
    """Every point's accuracy is at least its interval's worst case, and dense sampling comes within 1 %."""
    from dtypelab.formats import fmt

    v = fmt(spec).values().numpy()
    v = v[v > 0]
    edges, worst = accuracy_envelope(spec)
    t = np.linspace(0, 1, 4001)[1:-1]
    x = v[:-1, None] + (v[1:] - v[:-1])[:, None] * t
    acc = decimal_accuracy(spec, x.reshape(-1)).reshape(x.shape)
    acc[np.isinf(acc)] = np.nan
    sampled = np.nanmin(acc, axis=1)
    assert (sampled >= worst - 1e-9).all()
    np.testing.assert_allclose(sampled, worst, rtol=1e-2)


def test_envelope_of_a_wide_format_is_binned() -> None:
    edges, worst = accuracy_envelope("posit(32,2)", bins=64)
    assert len(edges) == 65 and len(worst) == 64 and np.isfinite(worst).all()
    assert worst.max() > 8  # posit32 near 1: about 8.5 decimals, not the 2-ish of an 8-bit format


def test_one_colour_per_format_in_every_figure() -> None:
    from dtypelab.report.colors import KNOWN, color_of

    assert len({color_of(f) for f in KNOWN}) == len(KNOWN)  # the report's formats are told apart
    assert color_of("int8/channel") == color_of("int8/tensor") == color_of("int8*") == color_of("int8")
    assert color_of("fp32") == "#000000" and color_of("fp(3,4)") == color_of("fp(3,4)")
