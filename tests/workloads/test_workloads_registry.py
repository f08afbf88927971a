"""The workload registry, the shared helpers (cache dir, atomic writes) and the unavailable workloads."""

import os
import pickle
import subprocess
import sys

import pytest
import torch

from dtypelab import workloads
from dtypelab.workloads import Workload, WorkloadUnavailable, atomic_write, cache_dir
from dtypelab.workloads.cifar import load_cifar10


def test_names_are_the_runnable_workloads():
    assert workloads.names() == ["digits-vgg", "lm", "minilm", "pydoc-gpt"]


@pytest.mark.parametrize("name", [n for n in workloads.names() if n != "lm"])  # lm needs files: test_workloads_lm
def test_every_registered_workload_implements_the_interface(name):
    """get(name) builds a Workload (cheaply: nothing is loaded or trained) named as registered."""
    w = workloads.get(name)
    assert isinstance(w, Workload)
    assert w.name == name
    assert w.primary_metric
    assert name in repr(w)


def test_get_miss_lists_the_known_names():
    with pytest.raises(KeyError) as info:
        workloads.get("mnist")
    message = str(info.value)
    for name in workloads.names() + sorted(workloads.unavailable()):
        assert name in message


@pytest.mark.parametrize("name", sorted(workloads.unavailable()))
def test_unavailable_workloads_raise_a_clear_error(name):
    """CIFAR-10 / ImageNet / GPT-2 have no stand-ins: get() says why and what to do instead."""
    with pytest.raises(WorkloadUnavailable, match="cannot be downloaded") as info:
        workloads.get(name)
    assert "load_user" in str(info.value)
    assert name not in workloads.names()


def test_register_rejects_bad_factories():
    with pytest.raises(ValueError, match="module:attribute"):
        workloads.register("x-test", "no_colon")
    with pytest.raises(ValueError, match="reserved"):
        workloads.register("cifar10", "a:b")
    with pytest.raises(TypeError):
        workloads.register("x-test", 3)  # type: ignore[arg-type]
    assert "x-test" not in workloads.names()


def test_import_is_light():
    """Importing dtypelab.workloads loads no scikit-learn, transformers or matplotlib."""
    heavy = ("sklearn", "transformers", "matplotlib", "sentence_transformers")
    code = f"import sys, dtypelab.workloads; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("DTYPELAB_CACHE", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit" and cache_dir().is_dir()
    monkeypatch.delenv("DTYPELAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "dtypelab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "dtypelab"


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write(target, lambda t: t.write_text("old"))

    def broken(t):
        t.write_text("half")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]  # no temp file left behind


def _fake_cifar_dir(root, n=4):
    """A tiny directory in the CIFAR-10 python-pickle layout (test fixture, not a dataset stand-in)."""
    root.mkdir()
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {b"data": (torch.arange(n * 3072) % 256).reshape(n, 3072).to(torch.uint8).numpy(),
                 b"labels": [(i + j) % 10 for j in range(n)]}
        with open(root / name, "wb") as fh:
            pickle.dump(batch, fh)
    return root


def test_cifar10_loader_reads_the_pickle_layout(tmp_path, monkeypatch):
    root = _fake_cifar_dir(tmp_path / "cifar-10-batches-py")
    x, y = load_cifar10(root, split="test", normalize=False)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.tolist() == [5, 6, 7, 8]
    assert float(x.max()) <= 1.0 and float(x[0, 0, 0, 1]) == pytest.approx(1 / 255)
    monkeypatch.setenv("DTYPELAB_CIFAR10_DIR", str(tmp_path))  # the parent directory works too
    x_train, y_train = load_cifar10(split="train")
    assert x_train.shape == (20, 3, 32, 32) and y_train.shape == (20,)


def test_cifar10_loader_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("DTYPELAB_CIFAR10_DIR", raising=False)
    with pytest.raises(WorkloadUnavailable, match="DTYPELAB_CIFAR10_DIR"):
        load_cifar10()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_cifar10(tmp_path, split="val")
