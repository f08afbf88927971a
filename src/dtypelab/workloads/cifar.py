"""Read a local CIFAR-10 copy (the python-pickle release, ``cifar-10-batches-py``) for your own workload.

dtypelab cannot download CIFAR-10 or a model trained on it here, so there is no ``cifar10`` workload to
``get``; with the files on disk, use :func:`load_cifar10` inside the evaluate/calibration functions you pass
to :func:`dtypelab.workloads.load_user`.

Example:
    >>> load_cifar10("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: '/nonexistent' is not a CIFAR-10 python-pickle directory: missing ['test_batch']
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from dtypelab.workloads.base import WorkloadUnavailable

__all__ = ["load_cifar10", "CIFAR10_MEAN", "CIFAR10_STD", "ENV_VAR"]

ENV_VAR = "DTYPELAB_CIFAR10_DIR"
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST = ("test_batch",)


def load_cifar10(path: str | os.PathLike[str] | None = None, split: str = "test",
                 normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 3, 32, 32)`` float32 and labels ``(N,)`` of a local CIFAR-10 python-pickle directory.

    ``path`` defaults to ``$DTYPELAB_CIFAR10_DIR``. ``split`` is ``"train"`` (50,000) or ``"test"`` (10,000).
    Pixels are scaled to [0, 1] and, with ``normalize``, standardised per channel (the usual constants).
    Only open files you trust: the release is Python pickles.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if path is None:
        path = os.environ.get(ENV_VAR)
        if not path:
            raise WorkloadUnavailable(f"CIFAR-10 cannot be downloaded here; pass the path of a local "
                                      f"'cifar-10-batches-py' directory or set {ENV_VAR}")
    root = Path(path).expanduser()
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    files = _TRAIN if split == "train" else _TEST
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(root)!r} is not a CIFAR-10 python-pickle directory: missing {missing}")
    xs, ys = [], []
    for name in files:
        with open(root / name, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")  # noqa: S301 - the documented format of the release
        xs.append(torch.as_tensor(batch[b"data"], dtype=torch.uint8).reshape(-1, 3, 32, 32))
        ys.append(torch.as_tensor(batch[b"labels"], dtype=torch.long))
    x = torch.cat(xs).float() / 255.0
    if normalize:
        x = (x - torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return x, torch.cat(ys)
