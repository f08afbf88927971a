"""Every command through typer's runner: results, and one line + exit code 2 for every kind of bad input.

``user`` is a user workload file (``tests/conftest.py``): a small trained MLP with ``build``, ``evaluate``
(``accuracy`` and the number of ``items``), ``batches`` and ``not_a_module``.
"""

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from dtypelab.cli import app, split_specs


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def user(user_workload_file):
    return str(user_workload_file)


def invoke(runner, *args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output


def sweep_args(user, runs, *more):
    return ["sweep", "--model", f"{user}:build", "--eval", f"{user}:evaluate", "--calib", f"{user}:batches",
            "--runs-dir", runs,
            "-f", "fp32", "-f", "posit(6,1)", "--scaling", "none", *more]


# ---- results ------------------------------------------------------------------------------------------------------

def test_formats_table_and_bad_format(runner):
    result = invoke(runner, "formats", "-f", "posit(8,1)", "-f", "e4m3")
    assert result.exit_code == 0 and "posit(8,1)" in result.stdout and "e4m3" in result.stdout
    assert_one_line_error(invoke(runner, "formats", "-f", "posit(8"), "posit(8")


def test_formats_roundings_lists_every_mode_and_policy(runner):
    from dtypelab.kernels.rounding import MODES, OVERFLOW

    result = invoke(runner, "formats", "roundings")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for name in [*MODES, *OVERFLOW, "daz", "ftz"]:
        assert any(line.split()[1].startswith(name) for line in lines[:-1]), name


def test_sweep_writes_results_with_the_umask_mode(runner, user, tmp_path):
    """Issue 19 item 16: results were 0600 (mkstemp); they get the umask's mode now."""
    old = os.umask(0o022)
    try:
        result = invoke(runner, *sweep_args(user, tmp_path / "runs", "--name", "a"))
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "runs" / "a" / "results.json").read_text())["results"]
    assert [(r["cell"], r["scaling"]) for r in rows] == [("fp32", "none"), ("posit(6,1)", "none")]
    assert rows[0]["settings"] == {"limit": None, "workload": None}
    for name in ("results.json", "results.csv", "report.md", "report.html"):
        assert stat.S_IMODE((tmp_path / "runs" / "a" / name).stat().st_mode) == 0o644, name


def test_sweep_resumed_with_another_limit_recomputes(runner, user, tmp_path):
    """Issue 19 item 3: a row computed on --limit 10 was reused as the full result."""
    runs = tmp_path / "runs"
    assert invoke(runner, *sweep_args(user, runs, "--limit", "10")).exit_code == 0
    small = json.loads((runs / "default" / "results.json").read_text())["results"]
    assert invoke(runner, *sweep_args(user, runs)).exit_code == 0
    full = json.loads((runs / "default" / "results.json").read_text())["results"]
    assert [r["settings"]["limit"] for r in small] == [10, 10] and [r["settings"]["limit"] for r in full] == [None] * 2
    from dtypelab.experiments import evaluate
    from dtypelab.workloads import load_user

    wl = load_user(model=f"{user}:build", evaluate=f"{user}:evaluate")
    assert full[0]["metrics"] == evaluate(wl, None, energy=False).metrics  # the full test set, not the slice
    assert small[0]["metrics"]["items"] == 10 and full[0]["metrics"]["items"] == 96


def test_a_second_sweep_into_a_held_run_directory_is_refused(runner, user, tmp_path):
    """Issue 19 item 2: two sweeps into one run directory both 'succeeded' and one lost its rows."""
    from dtypelab.experiments.store import RunLock

    with RunLock(tmp_path / "runs" / "default"):
        result = invoke(runner, *sweep_args(user, tmp_path / "runs"))
    assert_one_line_error(result, "in use by another dtypelab process", f"pid {os.getpid()}")
    assert not (tmp_path / "runs" / "default" / "results.json").exists()
    assert invoke(runner, *sweep_args(user, tmp_path / "runs")).exit_code == 0  # released


def test_quantize_with_a_scheme_and_weights_only_without_calib(runner, user):
    """Issue 19 item 14: a weights-only config on a user workload demanded --calib."""
    result = invoke(runner, "quantize", "--model", f"{user}:build", "--eval", f"{user}:evaluate",
                    "--scheme", "int8/channel/absmax")
    assert result.exit_code == 0, result.output
    assert "int8/channel/absmax" in result.stdout and "accuracy:" in result.stdout and "(fp32) ->" in result.stdout


def test_quantize_config_file_and_out(runner, user, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("weights: posit(8,1)\nactivations: posit(8,1)/tensor/absmax\n")
    result = invoke(runner, "quantize", "--model", f"{user}:build", "--eval", f"{user}:evaluate",
                    "--calib", f"{user}:batches", "--config", cfg, "--out", tmp_path / "rep")
    assert result.exit_code == 0, result.output
    assert "posit(8,1)" in result.stdout
    assert json.loads((tmp_path / "rep.json").read_text())["layers"]
    assert (tmp_path / "rep.csv").exists()


def test_cost_prints_tables_and_totals(runner, tmp_path):
    """``dtypelab cost`` on a registered workload and a YAML config file (the text moved into the CLI)."""
    import torch
    from torch import nn

    from dtypelab import workloads
    from dtypelab.workloads import _REGISTRY

    class Tiny(workloads.Workload):
        name, primary_metric = "tiny-cost", "mse"

        def _build_model(self):
            return nn.Sequential(nn.Linear(128, 10))

        def calibration(self, n_batches=1):
            return [torch.rand(4, 128)] * n_batches

        def run(self, model, batch):
            return model(batch)

        def evaluate(self, model, limit=None):
            return {"mse": 0.0}

    workloads.register("tiny-cost", Tiny)
    try:
        cfg = tmp_path / "int8.yaml"
        cfg.write_text("weights: int8/tensor/pow2\nactivations: uint8/tensor/pow2\n")
        result = invoke(runner, "cost", "-w", "tiny-cost", "--config", cfg, "--accounting", "lab")
        by_scheme = invoke(runner, "cost", "-w", "tiny-cost", "--scheme", "int8/tensor/pow2", "--accounting", "lab")
    finally:
        del _REGISTRY["tiny-cost"]
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "| 0 " in text and "383.4" in text
    assert "energy: 0.0004 µJ per example (FP32 0.0059 µJ; 15.33x less)" in text
    assert "size:" in text and "smaller" in text
    assert by_scheme.exit_code == 0 and "# tiny-cost: int8/tensor/pow2" in by_scheme.stdout


def test_search_space_keeps_the_commas_inside_parentheses(runner, user, tmp_path):
    """Issue 19 item 12: 'posit(6,1),lp(...)' was split into 'posit(6' and '1)'."""
    assert split_specs("posit(6,1),lp(6,1,2,0)/tensor/none") == ["posit(6,1)", "lp(6,1,2,0)/tensor/none"]
    old = os.umask(0o022)
    try:
        result = invoke(runner, "search", "--model", f"{user}:build", "--eval", f"{user}:evaluate", "--calib",
                        f"{user}:batches", "--space", "posit(6,1)/tensor/log2-hist,posit(8,1)/tensor/log2-hist",
                        "--budget", "8", "--generations", "1", "--population", "4", "--executor", "serial",
                        "--out", tmp_path / "s")
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    for name in ("best_config.yaml", "results.json", "summary.md", "pareto.png", "checkpoint.json"):
        assert stat.S_IMODE((tmp_path / "s" / name).stat().st_mode) == 0o644, name  # issue 19 item 16
    best = json.loads((tmp_path / "s" / "results.json").read_text())["best"]["config"]
    assert {r["weights"] for r in best["layers"]} <= {"posit(6,1)/tensor/log2-hist", "posit(8,1)/tensor/log2-hist"}


def test_search_on_a_user_file_under_the_process_executor(runner, user, tmp_path):
    """Issue 19 item 12: workers could not import the user's file (BrokenProcessPool)."""
    result = invoke(runner, "search", "--model", f"{user}:build", "--eval", f"{user}:evaluate", "--calib",
                    f"{user}:batches", "--space", "lp", "--budget", "6", "--generations", "1", "--population", "4",
                    "--executor", "process", "--workers", "1", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert "ga-best" in result.stdout


def test_search_resume_with_another_budget_or_space_is_refused(runner, user, tmp_path):
    """Issue 19 item 3: a resumed search with another budget recorded a best above the budget as within it."""
    base = ["search", "--model", f"{user}:build", "--eval", f"{user}:evaluate", "--calib", f"{user}:batches",
            "--generations", "1", "--population", "4", "--executor", "serial", "--out", tmp_path / "s"]
    assert invoke(runner, *base, "--space", "lp", "--budget", "6").exit_code == 0
    assert_one_line_error(invoke(runner, *base, "--space", "lp", "--budget", "4", "--resume"),
                          "cannot resume", "budget: 6.0 then, 4.0 now")
    assert_one_line_error(invoke(runner, *base, "--space", "posit", "--budget", "6", "--resume"),
                          "cannot resume", "space: 'lp' then, 'posit' now")
    assert invoke(runner, *base, "--space", "lp", "--budget", "6", "--resume").exit_code == 0
    (tmp_path / "s" / "checkpoint.json").write_text('{"generation": 0, "population": [[99, 0]], "scored": [],'
                                                    ' "history": [], "rng": [3, [1], null]}')
    assert_one_line_error(invoke(runner, *base, "--space", "lp", "--budget", "6", "--resume"),
                          "checkpoint", "damaged")
    (tmp_path / "s" / "checkpoint.json").write_text("{not json")
    assert_one_line_error(invoke(runner, *base, "--space", "lp", "--budget", "6", "--resume"), "not JSON")


# ---- one line and exit code 2 (issue 19 items 10, 11, 14, 15) -----------------------------------------------------

def test_unknown_and_unavailable_workloads(runner):
    assert_one_line_error(invoke(runner, "quantize", "-w", "mnist", "--scheme", "int8"),
                          "unknown workload 'mnist'", "known: digits-vgg")
    assert_one_line_error(invoke(runner, "sweep", "-w", "cifar10"), "cifar10", "cannot be downloaded", "load_user")
    assert_one_line_error(invoke(runner, "cost", "-w", "gpt2", "--scheme", "int8"), "gpt2")


def test_a_damaged_cached_model_is_named(runner, tmp_path, monkeypatch):
    """A truncated cache file gives one line naming it and saying what to do, not a 100-line traceback."""
    from dtypelab.workloads.digits import DigitsVGG

    monkeypatch.setenv("DTYPELAB_CACHE", str(tmp_path))
    wl = DigitsVGG()
    wl.weights_path.write_bytes(b"PK\x03\x04 truncated")
    wl.history_path.write_text("{}")
    assert_one_line_error(invoke(runner, "quantize", "-w", "digits-vgg", "--scheme", "int8"),
                          f"{wl.weights_path}: the cached digits-vgg model cannot be read", "delete the file")


def test_config_and_scheme_are_separate_options(runner, tmp_path):
    missing = tmp_path / "missing.yaml"
    assert_one_line_error(invoke(runner, "quantize", "-w", "digits-vgg", "--config", missing),
                          f"config file '{missing}' does not exist")
    assert_one_line_error(invoke(runner, "quantize", "-w", "digits-vgg"), "exactly one of --config FILE")
    bad = tmp_path / "bad.yaml"
    bad.write_text("weights: [posit(8,1)\n")
    assert_one_line_error(invoke(runner, "cost", "-w", "digits-vgg", "--config", bad), f"'{bad}' is not valid YAML")
    assert_one_line_error(invoke(runner, "quantize", "-w", "digits-vgg", "--scheme", "posit(8"), "posit(8")


def test_run_names_may_not_escape_the_runs_dir(runner, user, tmp_path):
    runs = tmp_path / "runs"
    for name in ("../../x", str(tmp_path / "abs"), "..", "a/b"):
        assert_one_line_error(invoke(runner, *sweep_args(user, runs, "--name", name)), "plain directory name")
    spec = tmp_path / "s.yaml"
    spec.write_text("name: ../escaped\n")
    assert_one_line_error(invoke(runner, *sweep_args(user, runs, "--file", spec)), "'../escaped'")
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "x").exists()


def test_bad_limits_and_budgets(runner, user, tmp_path):
    assert_one_line_error(invoke(runner, *sweep_args(user, tmp_path, "--limit", "-5")), "limit", "-5")
    assert_one_line_error(invoke(runner, "search", "--model", f"{user}:build", "--eval", f"{user}:evaluate",
                                 "--budget", "inf", "--out", tmp_path / "s"), "budget", "finite", "inf")


def test_unwritable_places(runner, user, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert_one_line_error(invoke(runner, *sweep_args(user, blocker / "runs")), str(blocker))
    assert_one_line_error(invoke(runner, "formats", "plot", "e4m3", "-o", blocker / "p.png"), str(blocker))
    assert_one_line_error(invoke(runner, "quantize", "--model", f"{user}:build", "--eval", f"{user}:evaluate",
                                 "--scheme", "int8", "--out", blocker / "rep"), str(blocker))
    assert_one_line_error(invoke(runner, "search", "--model", f"{user}:build", "--eval", f"{user}:evaluate",
                                 "--calib", f"{user}:batches", "--out", blocker / "s"), str(blocker))
    monkeypatch.setenv("DTYPELAB_CACHE", str(blocker / "cache"))
    assert_one_line_error(invoke(runner, "quantize", "-w", "digits-vgg", "--scheme", "int8"), str(blocker))


def test_user_factory_returning_a_non_module(runner, user):
    assert_one_line_error(invoke(runner, "quantize", "--model", f"{user}:not_a_module", "--eval",
                                 f"{user}:evaluate", "--scheme", "int8"), "not a torch.nn.Module")
    assert_one_line_error(invoke(runner, "quantize", "--model", f"{user}:nope", "--eval", f"{user}:evaluate",
                                 "--scheme", "int8"), "has no attribute 'nope'")


def test_corrupt_results_file(runner, user, tmp_path):
    run = tmp_path / "runs" / "default"
    run.mkdir(parents=True)
    (run / "results.json").write_text('{"results": [{"workload": "user"}]}')
    assert_one_line_error(invoke(runner, *sweep_args(user, tmp_path / "runs")), "results.json", "row 0")
    (run / "results.json").write_text("{")
    assert_one_line_error(invoke(runner, *sweep_args(user, tmp_path / "runs")), "cannot read results file")
