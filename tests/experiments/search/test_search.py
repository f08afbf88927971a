"""End to end on a small real-data workload (sklearn digits, an MLP): budget, outputs, resume, executors."""

import pytest

from dtypelab.experiments.executors import make_executor
from dtypelab.experiments.search import GASettings, search


@pytest.fixture(scope="module")
def workload(tiny_digits):
    return tiny_digits


def test_search_respects_budget_and_writes_outputs(workload, tmp_path):
    result = search(workload, space="lp", budget=5.0, settings=GASettings(population=8, generations=3, seed=0),
                    executor="serial", out_dir=tmp_path)
    assert result.best.bits_per_weight <= 5.0
    assert result.random_best.bits_per_weight <= 5.0
    assert result.evaluations > 8
    assert result.best.metrics["accuracy"] > 85.0  # digits MLP at ~5 bits still works
    assert result.fp32["accuracy"] > 90.0
    for name in ("best_config.yaml", "results.json", "pareto.csv", "summary.md", "pareto.png", "checkpoint.json",
                 "checkpoint-random.json"):
        assert (tmp_path / name).exists(), name
    import dtypelab as dl

    model = workload.model()
    report = dl.quantize_model(model, tmp_path / "best_config.yaml")
    assert workload.evaluate(model)["accuracy"] == pytest.approx(result.best.metrics["accuracy"])
    assert report is not None


def test_ablation_runs_each_objective_and_measures_both_terms(workload, tmp_path):
    from dtypelab.experiments.search.run import OBJECTIVES

    settings = GASettings(population=6, generations=2, seed=1)
    result = search(workload, space="lp", budget=5.0, settings=settings, executor="serial", out_dir=tmp_path,
                    ablation=True)
    rows = {a.objective: a for a in result.ablation}
    assert set(rows) == set(OBJECTIVES)
    assert rows["global+local"].best.config == result.best.config
    for a in rows.values():
        assert a.best.bits_per_weight <= 5.0
    # each winner's own objective value is the sum of the terms its objective weighs
    both = rows["global+local"]
    assert both.best.objective == pytest.approx(both.global_term + both.local_term)
    assert rows["local"].best.objective == pytest.approx(rows["local"].local_term)
    assert rows["global"].best.objective == pytest.approx(rows["global"].global_term)
    assert "Ablation" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "checkpoint-local.json").exists() and (tmp_path / "checkpoint-global.json").exists()


def test_budget_below_cheapest_is_an_error(workload):
    with pytest.raises(ValueError, match="cheapest"):
        search(workload, space="lp", budget=1.0, settings=GASettings(population=4, generations=1), executor="serial")


def test_process_executor_maps_in_order():
    run = make_executor("process", workers=2)
    try:
        assert run(abs, [-3, 1, -2]) == [3, 1, 2]
    finally:
        run.close()
    with pytest.raises(ValueError, match="valid: serial, process, ray"):
        make_executor("threads")


def test_process_workers_exit_when_the_search_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "pool.py"
    script.write_text("import os, time\nfrom dtypelab.experiments.executors import make_executor\n"
                      "def pid(_):\n    return os.getpid()\n"
                      "def busy(_):\n    t = time.time()\n    while time.time() - t < 60:\n        pass\n"
                      "if __name__ == '__main__':\n"
                      "    run = make_executor('process', 2)\n"
                      "    print(*set(run(pid, range(8))), flush=True)\n"
                      "    run(busy, range(2))\n")  # killed while its workers score
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path) as parent:
        workers = [int(p) for p in parent.stdout.readline().split()]
        assert workers and parent.pid not in workers
        time.sleep(1)
        parent.send_signal(signal.SIGKILL)

    def alive(pid: int) -> bool:  # gone, or a zombie waiting for init to reap it
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 15
    while any(alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(p) for p in workers)
