"""digits-vgg: the fixed split, seed 004's architecture, and the train-once/cache/plot path on tiny settings.

The full 4-epoch training never runs here: the training and caching logic runs through the same code on a
32-image subset with a sliced test set; the full model is checked only if it is already cached.
"""

import json
import os

import pytest
import torch
from torch import nn

from dtypelab.workloads import digits
from dtypelab.workloads.digits import VGG, DigitsVGG, TrainSettings, cache_key, load_data, plot_training_curves, train

USER_CACHE = os.environ.get("DTYPELAB_CACHE")
TINY = TrainSettings(epochs=1, batch_size=16, train_limit=16)


@pytest.fixture(scope="module")
def data():
    return load_data()


@pytest.fixture(scope="module")
def sliced(data):
    """The real split with the test set cut to 16 images, so training's per-epoch evaluation is cheap."""
    return dict(data, x_test=data["x_test"][:16], y_test=data["y_test"][:16])


@pytest.fixture
def small_data(sliced, tmp_cache, monkeypatch):
    """``load_data`` patched to the sliced split, for one test only (a module-scoped patch outlived the tests
    that asked for it, so the full model was trained into the user cache on 16 test images) and only with the
    temporary cache in place."""
    monkeypatch.setattr(digits, "load_data", lambda: sliced)
    return sliced


def test_split_is_fixed_stratified_and_normalised(data):
    assert data["x_train"].shape == (1437, 1, 32, 32) and data["x_test"].shape == (360, 1, 32, 32)
    counts = torch.bincount(data["y_test"], minlength=10)
    assert int(counts.min()) >= 35 and int(counts.max()) <= 37  # stratified 20% of ~180 per class
    assert float(data["x_train"].mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data["x_train"].std()) == pytest.approx(1.0, abs=1e-4)
    again = load_data()
    assert torch.equal(again["x_test"], data["x_test"]) and torch.equal(again["y_train"], data["y_train"])


def test_architecture_is_seed_004():
    """conv 64-192-384-256-256 with BatchNorm+ReLU, 3 max-pools, FC 4096-256-128-10, one input channel."""
    model = VGG(in_channels=1)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [
        (1, 64, (3, 3)), (64, 192, (3, 3)), (192, 384, (3, 3)), (384, 256, (3, 3)), (256, 256, (3, 3))]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 5
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    assert [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)] == [
        (4096, 256), (256, 128), (128, 10)]
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 10)
    with pytest.raises(ValueError, match="multiple of 8"):
        VGG(in_size=30)


def test_settings_validate_and_key_on_every_field():
    keys = {TrainSettings().key(), TrainSettings(epochs=5).key(), TrainSettings(lr=1e-3).key(), TINY.key()}
    assert len(keys) == 4
    assert TrainSettings().key() == TrainSettings().key()
    for bad in ({"epochs": 0}, {"batch_size": -1}, {"lr": 0.0}, {"train_limit": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainSettings(**bad)


def test_the_cache_key_covers_the_data(data, sliced, tmp_cache):
    """Weights trained (or tested) on other data never share a cache file with the real model's."""
    real = cache_key(TINY, data)
    assert real == cache_key(TINY, load_data())
    flipped = data["y_train"].clone()
    flipped[0] = (flipped[0] + 1) % 10
    nudged = data["x_train"].clone()
    nudged[5, 0, 3, 3] = torch.nextafter(nudged[5, 0, 3, 3], torch.tensor(1e9))
    others = [sliced, dict(data, y_train=flipped), dict(data, x_train=nudged), {k: data[k] for k in data if k != "std"}]
    assert len({real, *(cache_key(TINY, d) for d in others)}) == 1 + len(others)
    w, patched = DigitsVGG(TINY), DigitsVGG(TINY)
    w._data, patched._data = data, sliced
    assert w.weights_path != patched.weights_path


def test_train_once_then_load_from_cache(small_data, tmp_cache, monkeypatch):
    w = DigitsVGG(TINY)
    assert w.weights_path.parent == tmp_cache and cache_key(TINY, small_data) in w.weights_path.name
    assert not w.weights_path.exists()
    threads = torch.get_num_threads()
    model = w.model()
    assert torch.get_num_threads() == threads  # training restores torch's thread count
    assert w.weights_path.exists() and w.history_path.exists()
    assert [p.name for p in tmp_cache.iterdir() if p.name.startswith(".")] == []  # no temp files left
    hist = json.loads(w.history_path.read_text())
    assert hist["epoch"] == [1] and len(hist["train_loss"]) == len(hist["test_acc"]) == 1
    assert hist["settings"]["train_limit"] == 16 and hist["key"] == cache_key(TINY, small_data)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached model must not be retrained")

    monkeypatch.setattr(digits, "train", no_training)
    cached = DigitsVGG(TINY).model()
    pairs = zip(model.state_dict().values(), cached.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_training_is_deterministic(small_data, tmp_cache):
    """Training again with the same settings gives bit-identical weights and history."""
    w = DigitsVGG(TINY)
    cached = w.model().state_dict()
    state, hist = train(TINY, small_data)
    assert all(torch.equal(state[k], cached[k]) for k in state)
    assert hist["train_loss"] == w.history()["train_loss"]


def test_model_copies_are_fresh_and_in_eval_mode(small_data, tmp_cache):
    """model() hands out independent copies: zeroing one copy's weights leaves the next untouched."""
    w = DigitsVGG(TINY)
    a, b = w.model(), w.model()
    assert a is not b and not a.training and not b.training
    with torch.no_grad():
        a.fc8[0].weight.zero_()
    assert float(b.fc8[0].weight.detach().abs().sum()) > 0
    assert float(w.model().fc8[0].weight.detach().abs().sum()) > 0


def test_run_calibration_and_evaluate(small_data, tmp_cache):
    w = DigitsVGG(TINY)
    model = w.model()
    batches = w.calibration(n_batches=2, batch_size=8)
    assert [tuple(b.shape) for b in batches] == [(8, 1, 32, 32)] * 2
    logits = w.run(model, batches[0])
    assert logits.shape == (8, 10) and not logits.requires_grad
    metrics = w.evaluate(model, limit=16)
    assert set(metrics) == {"top1", "loss", "n"} and metrics["n"] == 16
    assert 0.0 <= metrics[w.primary_metric] <= 100.0
    model.train()
    w.evaluate(model, limit=4)
    assert model.training  # evaluate restores the caller's mode


def test_training_curves_plot(small_data, tmp_cache, tmp_path):
    w = DigitsVGG(TINY)
    path = w.plot_training_curves(tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    hist = {"epoch": [1, 2, 3], "train_loss": [1.0, 0.4, 0.2], "test_acc": [80.0, 95.0, 97.0]}
    assert plot_training_curves(hist, tmp_path / "h.png").stat().st_size > 1000


def test_full_model_is_accurate(monkeypatch):
    """The main job's model: trained into the user cache on first use (about 70 s on 2 CPUs), as `make run`
    would, and then only loaded."""
    if USER_CACHE is None:  # other tests point DTYPELAB_CACHE at a temporary cache: use the user's again
        monkeypatch.delenv("DTYPELAB_CACHE", raising=False)
    else:
        monkeypatch.setenv("DTYPELAB_CACHE", USER_CACHE)
    assert digits.load_data is load_data  # no test's patched loader is still in place
    w = DigitsVGG()
    metrics = w.evaluate(w.model())
    assert metrics["top1"] > 95.0 and metrics["n"] == 360
    assert w.weights_path.exists()
    test_acc = w.history()["test_acc"]  # measured on all 360 test images: multiples of 100/360
    assert all(abs(a * 3.6 - round(a * 3.6)) < 1e-9 for a in test_acc)
