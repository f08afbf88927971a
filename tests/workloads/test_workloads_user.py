"""load_user: a user's model/eval/calibration callables behind the workload interface, with clear errors."""

import textwrap

import pytest
import torch

from dtypelab.workloads import UserWorkload, Workload, load_user
from dtypelab.workloads.user import resolve

USER_MODULE = textwrap.dedent('''
    import torch

    def factory():
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))

    def evaluate(model, limit=None):
        x = torch.ones(limit or 8, 4)
        with torch.no_grad():
            return {"score": float(model(x).sum()), "n": float(len(x))}
    evaluate.primary_metric = "score"

    def evaluate_float(model):
        return 0.5

    def batches():
        for i in range(100):
            yield torch.full((2, 4), float(i))

    NOT_CALLABLE = 3

    class Holder:
        @staticmethod
        def make():
            return torch.nn.Linear(1, 1)
''')


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_user_model.py"
    path.write_text(USER_MODULE)
    return path


def test_strings_resolve_to_a_workload(user_file):
    w = load_user(model=f"{user_file}:factory", evaluate=f"{user_file}:evaluate", calib=f"{user_file}:batches")
    assert isinstance(w, Workload) and isinstance(w, UserWorkload)
    assert w.primary_metric == "score"  # taken from the evaluate function's attribute
    model = w.model()
    assert isinstance(model, torch.nn.Module) and not model.training and w.model() is not model
    batches = w.calibration(n_batches=3)
    assert len(batches) == 3 and float(batches[2][0, 0]) == 2.0
    assert w.run(model, batches[0]).shape == (2, 2)
    full, small = w.evaluate(model), w.evaluate(model, limit=2)
    assert full["n"] == 8 and small["n"] == 2  # limit is passed when evaluate accepts it


def test_callables_and_float_results(user_file):
    from dtypelab.workloads.user import _import

    mod = _import(str(user_file), "x", "model")
    w = load_user(model=mod.factory, evaluate=mod.evaluate_float, primary_metric="acc", name="mine")
    assert w.name == "mine"
    assert w.evaluate(w.model(), limit=3) == {"acc": 0.5}
    assert load_user(model=mod.factory, evaluate=mod.evaluate_float).evaluate(w.model()) == {"metric": 0.5}
    assert isinstance(load_user(model=f"{user_file}:Holder.make", evaluate=mod.evaluate_float).model(),
                      torch.nn.Linear)


def test_run_passes_mappings_as_keywords():
    class KW(torch.nn.Module):
        def forward(self, a, b):
            return a + b

    w = load_user(model=KW, evaluate=lambda m: 1.0)
    assert float(w.run(w.model(), {"a": torch.tensor(1.0), "b": torch.tensor(2.0)})) == 3.0
    custom = load_user(model=KW, evaluate=lambda m: 1.0, run=lambda m, b: m(*b))
    assert float(custom.run(custom.model(), (torch.tensor(1.0), torch.tensor(4.0)))) == 5.0


@pytest.mark.parametrize("spec, error, match", [
    ("math.sqrt", ValueError, "must look like 'package.module:attribute'"),
    ("math:", ValueError, "must look like"),
    (":sqrt", ValueError, "must look like"),
    ("a:b:c", ValueError, "must look like"),
    ("no_such_module_xyz:f", ValueError, "cannot import module 'no_such_module_xyz'"),
    ("math:sqroot", ValueError, "'math' has no attribute 'sqroot'; did you mean 'sqrt'"),
    ("math:pi", TypeError, "not a callable"),
    ("/no/such/file.py:f", ValueError, "does not exist"),
])
def test_bad_specs_name_the_problem(spec, error, match):
    with pytest.raises(error, match=match):
        resolve(spec, "model")


def test_bad_specs_from_a_file(user_file):
    with pytest.raises(TypeError, match="NOT_CALLABLE.*not a callable|names a int"):
        load_user(model=f"{user_file}:NOT_CALLABLE", evaluate=f"{user_file}:evaluate")
    with pytest.raises(ValueError, match="evaluate spec .*has no attribute 'evaluat'"):
        load_user(model=f"{user_file}:factory", evaluate=f"{user_file}:evaluat")


def test_user_errors_at_use():
    w = load_user(model=lambda: "not a module", evaluate=lambda m: {"acc": 1.0}, primary_metric="top1")
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        w.model()
    ok = load_user(model=lambda: torch.nn.Identity(), evaluate=lambda m: {"acc": 1.0}, primary_metric="top1")
    with pytest.raises(ValueError, match=r"without the primary metric 'top1'.*primary_metric="):
        ok.evaluate(ok.model())
    with pytest.raises(ValueError, match="--calib"):
        ok.calibration()
    bad = load_user(model=lambda: torch.nn.Identity(), evaluate=lambda m: "high")
    with pytest.raises(TypeError, match="float or a dict"):
        bad.evaluate(bad.model())
