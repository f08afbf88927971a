"""Ray, on one local instance (its start-up is slow: one test, marked ``ray`` so it can be deselected):
the executor maps in order, and the sweep (through the CLI) and the search give what a serial run gives."""

import json

import pytest
from typer.testing import CliRunner

from dtypelab.cli import app
from dtypelab.experiments import make_executor
from dtypelab.experiments.search import GASettings, search


@pytest.mark.ray
def test_ray_runs_the_sweep_and_the_search_as_a_serial_run_does(tiny_digits, user_workload_file, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        with make_executor("ray") as run:
            assert list(run.map(abs, [-3, 1, -2])) == [3, 1, 2]

        user = user_workload_file
        runs = tmp_path / "runs"
        base = ["sweep", "--model", f"{user}:build", "--eval", f"{user}:evaluate", "--calib", f"{user}:batches",
                "--runs-dir", str(runs), "-f", "fp32", "-f", "int8/channel/absmax", "--limit", "60"]
        runner = CliRunner()
        for name, more in (("serial", []), ("ray", ["--executor", "ray"])):
            result = runner.invoke(app, [*base, "--name", name, *more], catch_exceptions=False)
            assert result.exit_code == 0, result.output

        def rows(name):
            return [{k: v for k, v in r.items() if k != "seconds"}
                    for r in json.loads((runs / name / "results.json").read_text())["results"]]

        assert len(rows("ray")) == 4 and rows("ray") == rows("serial")

        settings = GASettings(population=4, generations=1, seed=0)
        via_ray = search(tiny_digits, space="lp", budget=5.0, settings=settings, executor="ray")
        serial = search(tiny_digits, space="lp", budget=5.0, settings=settings, executor="serial")
        assert via_ray.best.config == serial.best.config  # the same seeded search, scored remotely
        assert via_ray.best.objective == serial.best.objective
    finally:
        ray.shutdown()
