"""Shared small models and snapshots for tests/model (imported by the test files beside it)."""

from __future__ import annotations

import torch
from torch import nn


def snapshot(model: nn.Module) -> dict:
    """Everything restore must give back: state_dict keys in order and values, parameter objects, module classes,
    hooks and attributes."""
    return {
        "keys": list(model.state_dict()),
        "values": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "params": [(n, id(p)) for n, p in model.named_parameters(remove_duplicate=False)],
        "classes": [(n, type(m)) for n, m in model.named_modules()],
        "training": [(n, m.training) for n, m in model.named_modules()],
        "hooks": [(n, len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules()],
        "dicts": [(n, sorted(k for k in vars(m) if not k.startswith("__"))) for n, m in model.named_modules()],
    }


def assert_same(model: nn.Module, snap: dict) -> None:
    now = snapshot(model)
    assert now["keys"] == snap["keys"]
    for k, v in snap["values"].items():
        got = now["values"][k]
        assert got.dtype == v.dtype and got.shape == v.shape and torch.equal(got, v), k
    assert now["params"] == snap["params"]
    assert now["classes"] == snap["classes"]
    assert now["training"] == snap["training"]
    assert now["hooks"] == snap["hooks"]
    assert now["dicts"] == snap["dicts"]


class ConvNet(nn.Module):
    """A small conv net (Conv2d, ReLU, MaxPool, Flatten, Linear) on 1x8x8 inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, stride=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


class SeqModel(nn.Module):
    """An architecture the package never saw: Embedding -> Conv1d -> MultiheadAttention -> tied output Linear."""

    def __init__(self, vocab: int = 40, dim: int = 16) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.conv = nn.Conv1d(dim, dim, 3, padding=1)
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens)
        h = h + torch.relu(self.conv(h.transpose(1, 2))).transpose(1, 2)
        a, _ = self.attn(h, h, h, need_weights=False)
        return self.head(self.norm(h + a))


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
