"""``dtypelab sensitivity``: the ranked table on stdout, and sensitivity.md/.json/.png in the run directory."""

import json

import pytest
from typer.testing import CliRunner

from dtypelab.cli import app


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_sensitivity_writes_the_run_directory(user_workload_file, tmp_path):
    out = tmp_path / "run"
    user = str(user_workload_file)
    result = _invoke("sensitivity", "--model", f"{user}:build", "--eval", f"{user}:evaluate", "--calib",
                     f"{user}:batches", "--scheme", "int2/channel/absmax", "--activations", "int4/tensor/absmax",
                     "--out", out)
    assert result.exit_code == 0, result.output
    assert "| rank | layer" in result.output and f"wrote {out / 'sensitivity.md'}" in result.output
    data = json.loads((out / "sensitivity.json").read_text())
    assert sorted(r["layer"] for r in data["rows"]) == ["0", "2"] and data["activations"] == "int4/tensor/absmax"
    assert (out / "sensitivity.png").stat().st_size > 0


def test_sensitivity_bad_input_is_one_line(user_workload_file, tmp_path):
    user = str(user_workload_file)
    for args, needle in [(["--scheme", "posit(8"], "posit(8"), (["--batches", "0"], "--batches")]:
        result = CliRunner().invoke(app, ["sensitivity", "--model", f"{user}:build", "--eval", f"{user}:evaluate",
                                          "--calib", f"{user}:batches", "--out", str(tmp_path), *args])
        assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output


@pytest.mark.slow
def test_sensitivity_on_digits_vgg(tmp_path, monkeypatch):
    """The real digits workload (trained into a temporary cache: about 4 minutes on 2 shared cores)."""
    monkeypatch.setenv("DTYPELAB_CACHE", str(tmp_path / "cache"))
    result = _invoke("sensitivity", "-w", "digits-vgg", "--scheme", "int4/channel/absmax", "--limit", "100",
                     "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run" / "sensitivity.json").read_text())
    assert len(data["rows"]) == 8 and data["primary_metric"] == "top1"


def test_search_prior_from_a_sensitivity_run(user_workload_file, tmp_path):
    user = str(user_workload_file)
    common = ["--model", f"{user}:build", "--eval", f"{user}:evaluate", "--calib", f"{user}:batches"]
    assert _invoke("sensitivity", *common, "--scheme", "int4/channel/absmax", "--out", tmp_path / "sens").exit_code == 0
    search = ["search", *common, "--space", "lp", "--budget", "6", "--generations", "1", "--population", "4",
              "--executor", "serial"]
    result = _invoke(*search, "--prior", tmp_path / "sens", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    ranking = [r["layer"] for r in json.loads((tmp_path / "sens" / "sensitivity.json").read_text())["rows"]]
    assert json.loads((tmp_path / "s" / "search.json").read_text())["prior"] == ranking
    bad = CliRunner().invoke(app, [str(a) for a in [*search, "--prior", tmp_path / "nowhere", "--out", tmp_path / "t"]])
    assert bad.exit_code == 2 and "sensitivity ranking" in bad.stderr and "Traceback" not in bad.output
