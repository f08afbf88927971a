"""``digits-vgg``: the lab's VGG (seed 004) on scikit-learn's real handwritten digits.

Data: ``sklearn.datasets.load_digits()`` (1,797 real 8x8 images, 16 grey levels). Pixels are divided by
16 (to [0, 1]), upsampled to 32x32 with bilinear interpolation (``align_corners=False``) and normalised
with the training split's pixel mean and standard deviation. The split is fixed:
``train_test_split(range(1797), test_size=0.2, stratify=target, random_state=0)`` -> 1,437 train /
360 test images.

Model: seed 004's VGG with one input channel (see :class:`VGG`). It is trained on first use (seeded,
deterministic) and cached in :func:`~dtypelab.workloads.base.cache_dir` under a key (:func:`cache_key`) that
hashes this file's source, the :class:`TrainSettings` and the data it was trained and tested on, with the
per-epoch history beside it.

Example:
    >>> from dtypelab.workloads.digits import TrainSettings
    >>> TrainSettings().epochs > 0
    True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dtypelab.workloads.base import TrainedOnFirstUse, Workload, atomic_write, cache_dir, torch_threads

__all__ = ["VGG", "TrainSettings", "DigitsVGG", "load_data", "cache_key", "train", "plot_training_curves"]

log = logging.getLogger(__name__)

NUM_CLASSES = 10
IMAGE_SIZE = 32
TEST_SIZE = 0.2
SPLIT_SEED = 0


class VGG(nn.Module):
    """Seed 004's VGG: conv 64-192-384-256-256 (3x3, BatchNorm, ReLU), 2x2 max-pool after conv1, 2 and 5;
    FC ``256*(in_size/8)^2 -> 256 -> 128 -> num_classes`` with ReLU between the FC layers.

    One deliberate change from the seed: no ReLU after ``fc8`` (the seed's ReLU on the logits clips
    every negative logit to zero, which only hurts). Module names follow the seed (``conv1.0`` is the
    first Conv2d, ``fc6.0`` the first Linear).

    Example:
        >>> import torch
        >>> VGG(in_channels=1)(torch.zeros(2, 1, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, in_size: int = IMAGE_SIZE, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        if in_size % 8:
            raise ValueError(f"in_size must be a multiple of 8 (three 2x2 poolings), got {in_size}")

        def block(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=1, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            if pool:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            return nn.Sequential(*layers)

        self.conv1 = block(in_channels, 64, True)
        self.conv2 = block(64, 192, True)
        self.conv3 = block(192, 384, False)
        self.conv4 = block(384, 256, False)
        self.conv5 = block(256, 256, True)
        fmap = in_size // 8
        self.fc6 = nn.Sequential(nn.Linear(256 * fmap * fmap, 256), nn.ReLU())
        self.fc7 = nn.Sequential(nn.Linear(256, 128), nn.ReLU())
        self.fc8 = nn.Sequential(nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.conv4(self.conv3(self.conv2(self.conv1(x)))))
        x = torch.flatten(x, start_dim=1)
        return self.fc8(self.fc7(self.fc6(x)))


@dataclass(frozen=True)
class TrainSettings:
    """How ``digits-vgg`` is trained; every field enters the cache key (:func:`cache_key`).

    Defaults were picked by measurement on the 2-core machine: Adam with a one-cycle learning rate reaches
    ~98-99% test top-1 in 4 epochs. ``train_limit`` trains on the first N images of the (seeded) shuffled
    training split, for fast tests of the same code path.

    Example:
        >>> TrainSettings(epochs=1, train_limit=64).key() != TrainSettings().key()
        True
    """

    epochs: int = 4
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    train_limit: int | None = None

    def __post_init__(self) -> None:
        for field in ("epochs", "batch_size", "seed"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < (0 if field == "seed" else 1):
                raise ValueError(f"TrainSettings.{field} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainSettings.lr must be > 0, got {self.lr!r}")
        if self.train_limit is not None and (not isinstance(self.train_limit, int) or self.train_limit < 1):
            raise ValueError(f"TrainSettings.train_limit must be None or a positive int, got {self.train_limit!r}")

    def key(self) -> str:
        """A 16-hex-digit hash of this file's source (model, data, training code) and these settings; the
        cache key (:func:`cache_key`) adds the data."""
        h = hashlib.sha256(Path(__file__).read_bytes())
        h.update(json.dumps(dataclasses.asdict(self), sort_keys=True).encode())
        return h.hexdigest()[:16]


def load_data() -> dict[str, torch.Tensor]:
    """The fixed digits split as tensors: ``x_train (1437,1,32,32)``, ``y_train``, ``x_test (360,...)``, ``y_test``.

    Also ``mean`` and ``std``: the training pixels' statistics used to normalise both splits.

    Example:
        >>> d = load_data()
        >>> tuple(d["x_train"].shape), tuple(d["x_test"].shape)
        ((1437, 1, 32, 32), (360, 1, 32, 32))
    """
    import numpy as np
    import torch.nn.functional as F
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False)
    y = torch.tensor(digits.target, dtype=torch.long)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=TEST_SIZE, stratify=digits.target, random_state=SPLIT_SEED
    )
    train_idx, test_idx = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    mean, std = x[train_idx].mean(), x[train_idx].std()
    x = (x - mean) / std
    return {"x_train": x[train_idx], "y_train": y[train_idx], "x_test": x[test_idx], "y_test": y[test_idx],
            "mean": mean, "std": std}


def cache_key(settings: TrainSettings, data: dict[str, torch.Tensor]) -> str:
    """The cache key of a model trained with ``settings`` on ``data``: a 16-hex-digit hash of
    :meth:`TrainSettings.key` and every tensor of ``data`` (name, dtype, shape and bytes), so a model trained or
    tested on other data (a slice, a patched loader) can never be taken for the real one.

    Example:
        >>> d = {"x_train": torch.zeros(4, 1), "y_train": torch.zeros(4, dtype=torch.long)}
        >>> cache_key(TrainSettings(), d) == cache_key(TrainSettings(), dict(d, y_train=torch.ones(4).long()))
        False
    """
    h = hashlib.sha256(settings.key().encode())
    for name in sorted(data):
        t = torch.as_tensor(data[name]).detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy in percent of ``model`` on ``(x, y)``.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> 0.0 <= accuracy(m, torch.randn(4, 2), torch.tensor([0, 1, 0, 1])) <= 100.0
        True
    """
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return 100.0 * correct / max(1, len(y))


def train(settings: TrainSettings, data: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, Any], dict]:
    """Train :class:`VGG` on the digits split, deterministically; returns ``(state_dict, history)``.

    ``history`` holds per-epoch ``train_loss``, ``train_acc`` and ``test_acc`` lists, the settings, the
    wall-clock ``seconds`` and the process ``cpu_seconds``. Uses every CPU the process may use (restoring
    torch's thread count after).

    Example:
        >>> state, hist = train(TrainSettings(epochs=1, batch_size=16, train_limit=16))  # doctest: +SKIP
        >>> len(hist["test_acc"])  # doctest: +SKIP
        1
    """
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    data = load_data() if data is None else data
    gen = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(data["y_train"]), generator=gen)
    if settings.train_limit is not None:
        order = order[: settings.train_limit]
    x_train, y_train = data["x_train"][order], data["y_train"][order]
    steps_per_epoch = -(-len(y_train) // settings.batch_size)
    history: dict[str, Any] = {"epoch": [], "train_loss": [], "train_acc": [], "test_acc": [],
                               "settings": dataclasses.asdict(settings), "key": cache_key(settings, data)}
    start, cpu_start = time.perf_counter(), time.process_time()
    with torch_threads() as threads:
        torch.manual_seed(settings.seed)
        model = VGG(in_channels=1)
        opt = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=settings.lr, total_steps=settings.epochs * steps_per_epoch, pct_start=0.25
        )
        bar = tqdm(range(settings.epochs), desc="training digits-vgg", unit="epoch", disable=None)
        for epoch in bar:
            model.train()
            perm = torch.randperm(len(y_train), generator=gen)
            loss_sum, correct = 0.0, 0
            for i in range(0, len(y_train), settings.batch_size):
                idx = perm[i : i + settings.batch_size]
                logits = model(x_train[idx])
                loss = F.cross_entropy(logits, y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += loss.item() * len(idx)
                correct += int((logits.argmax(1) == y_train[idx]).sum())
            model.eval()
            test_acc = accuracy(model, data["x_test"], data["y_test"])
            history["epoch"].append(epoch + 1)
            history["train_loss"].append(loss_sum / len(y_train))
            history["train_acc"].append(100.0 * correct / len(y_train))
            history["test_acc"].append(test_acc)
            bar.set_postfix(loss=f"{loss_sum / len(y_train):.4f}", test_acc=f"{test_acc:.2f}")
            log.info("digits-vgg epoch %d: train loss %.4f, test top-1 %.2f%%", epoch + 1,
                     loss_sum / len(y_train), test_acc)
    history["seconds"] = time.perf_counter() - start
    history["cpu_seconds"] = time.process_time() - cpu_start
    history["threads"] = threads
    history["torch"] = torch.__version__
    return model.state_dict(), history


class DigitsVGG(TrainedOnFirstUse, Workload):
    """The ``digits-vgg`` workload; primary metric ``top1`` (test accuracy, percent).

    Example:
        >>> w = DigitsVGG()
        >>> w.name, w.primary_metric
        ('digits-vgg', 'top1')
    """

    name = "digits-vgg"
    primary_metric = "top1"
    _REBUILDABLE = ("_pristine", "_data")  # weights come from the cache (or a deterministic training run)

    def __init__(self, settings: TrainSettings | None = None) -> None:
        self.settings = settings or TrainSettings()
        self._data: dict[str, torch.Tensor] | None = None

    # -- data -------------------------------------------------------------------------------------
    @property
    def data(self) -> dict[str, torch.Tensor]:
        """The fixed split (see :func:`load_data`), loaded once."""
        if self._data is None:
            self._data = load_data()
        return self._data

    # -- cache ------------------------------------------------------------------------------------
    @property
    def weights_path(self) -> Path:
        """Where the trained weights live: ``<cache>/digits-vgg-<key>.pt`` (key: :func:`cache_key`)."""
        return cache_dir() / f"digits-vgg-{cache_key(self.settings, self.data)}.pt"

    def _train(self) -> tuple[dict[str, Any], dict[str, Any]]:  # history: per-epoch train_loss, train/test_acc
        return train(self.settings, self.data)

    def _new_model(self) -> nn.Module:
        return VGG(in_channels=1)

    # -- interface --------------------------------------------------------------------------------
    def calibration(self, n_batches: int = 4, batch_size: int = 32) -> list[torch.Tensor]:
        """``n_batches`` training-image batches (N, 1, 32, 32), in a fixed seeded order.

        Example:
            >>> [tuple(b.shape) for b in DigitsVGG().calibration(2, batch_size=8)]
            [(8, 1, 32, 32), (8, 1, 32, 32)]
        """
        x = self.data["x_train"]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1234))
        return [x[order[i * batch_size : (i + 1) * batch_size]] for i in range(n_batches)
                if i * batch_size < len(x)]

    def run(self, model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10) of one image batch."""
        with torch.no_grad():
            return model(batch)

    def evaluate(self, model: nn.Module, limit: int | None = None) -> dict[str, float]:
        """``top1`` (percent), ``loss`` (mean cross-entropy) and ``n`` on the test split (first ``limit`` images)."""
        import torch.nn.functional as F

        x, y = self.data["x_test"], self.data["y_test"]
        if limit is not None:
            x, y = x[:limit], y[:limit]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + 256]) for i in range(0, len(y), 256)])
        model.train(was_training)
        return {"top1": 100.0 * float((logits.argmax(1) == y).float().mean()),
                "loss": float(F.cross_entropy(logits, y)), "n": float(len(y))}

    def plot_training_curves(self, path: str | Path) -> Path:
        """Plot this workload's training curves to a PNG (see :func:`plot_training_curves`)."""
        return plot_training_curves(self.history(), path)


def plot_training_curves(history: dict[str, Any], path: str | Path) -> Path:
    """Loss per epoch and accuracy per epoch (the lab's two figures, side by side) as a PNG.

    Example:
        >>> import tempfile, pathlib
        >>> h = {"epoch": [1, 2], "train_loss": [1.0, 0.5], "train_acc": [60, 90], "test_acc": [70, 92]}
        >>> plot_training_curves(h, pathlib.Path(tempfile.mkdtemp()) / "c.png").suffix
        '.png'
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = history["epoch"]
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, history["train_loss"], marker="o", label="train loss")
    ax_loss.set(title="Loss / epoch", xlabel="epoch", ylabel="cross-entropy")
    ax_loss.legend()
    if history.get("train_acc"):
        ax_acc.plot(epochs, history["train_acc"], marker="o", label="train top-1")
    ax_acc.plot(epochs, history["test_acc"], marker="o", label="test top-1")
    ax_acc.set(title="Accuracy / epoch", xlabel="epoch", ylabel="accuracy (%)")
    ax_acc.legend()
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.set_xticks(list(epochs))
    fig.suptitle("digits-vgg training")
    fig.tight_layout()
    return atomic_write(path, lambda t: fig.savefig(t, format="png"))
