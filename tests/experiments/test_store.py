"""The result store: rows round-trip, the lock keeps a second process out, damaged files are named."""

import json
import subprocess
import sys

import pytest

from dtypelab.experiments.store import Result, ResultStore, RunDirBusy, RunLock, run_dir


def row(cell="fp32", scaling="none", value=1.0, settings=None):
    return Result("w", cell, scaling, None, None, "acc", {"acc": value}, 32.0, 1.0, 1.0, 0.0, 0.1, 5.0, settings)


def test_rows_round_trip_and_replace_by_key(tmp_path):
    with ResultStore(tmp_path) as store:
        store.add(row(value=1.0, settings={"limit": 10}))
        store.add(row("posit(6,1)"))
        store.add(row(value=2.0, settings={"limit": None}))  # the same key: replaced
    with ResultStore(tmp_path) as again:
        assert list(again.results) == ["w|fp32|none", "w|posit(6,1)|none"]
        assert again.results["w|fp32|none"] == row(value=2.0, settings={"limit": None})
    assert (tmp_path / "results.csv").read_text().count("\n") == 3


def test_a_store_from_before_settings_loads(tmp_path):
    legacy = {k: v for k, v in row().__dict__.items() if k != "settings"}
    (tmp_path / "results.json").write_text(json.dumps({"results": [legacy]}))
    with ResultStore(tmp_path) as store:
        assert store.results["w|fp32|none"].settings is None  # unknown: a sweep recomputes it


def test_the_lock_keeps_another_process_out_until_released(tmp_path):
    code = ("import sys; from dtypelab.experiments.store import ResultStore, RunDirBusy\n"
            "try:\n    ResultStore(sys.argv[1])\nexcept RunDirBusy as e:\n    print(e); sys.exit(3)\n")
    with ResultStore(tmp_path):
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert other.returncode == 3, other.stderr
        assert "in use by another dtypelab process" in other.stdout
        with pytest.raises(RunDirBusy, match="pid"):
            RunLock(tmp_path)
    assert subprocess.run([sys.executable, "-c", code, str(tmp_path)]).returncode == 0


@pytest.mark.parametrize("text, match", [("{", "cannot read"), ("[]", "no 'results' list"),
                                         ('{"results": [{"workload": "w"}]}', "row 0 is not a result row"),
                                         ('{"results": [3]}', "row 0")])
def test_damaged_results_files_are_named(tmp_path, text, match):
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        ResultStore(tmp_path)
    assert "results.json" in str(err.value)
    ResultStore(tmp_path / "elsewhere").close()
    with ResultStore(tmp_path / "x"):  # the failed open released its lock
        pass


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", "/abs", "a\\b"])
def test_run_names_stay_inside_the_runs_dir(name):
    with pytest.raises(ValueError, match="plain directory name"):
        run_dir("runs", name)
    assert run_dir("runs", "posit-6.1").parts == ("runs", "posit-6.1")
