"""Quantization-aware training: fake-quant with the straight-through gradient makes a config trainable, and on real
data (scikit-learn's 8x8 handwritten digits) 4-bit QAT beats the same format applied after training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import dtypelab as dl

CONFIG = {"weights": "int4/tensor/absmax", "activations": "int4/tensor/absmax"}


def _digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1200]], y[perm[:1200]], x[perm[1200:]], y[perm[1200:]]


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_qat_beats_ptq_on_digits():
    """Same FP32 start, same format (int4 weights and activations, absmax per tensor): fine-tuning through the
    fake quantizers (QAT) recovers accuracy that post-training quantization (PTQ) loses."""
    xtr, ytr, xte, yte = _digits()
    torch.manual_seed(0)
    fp32 = _train(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), xtr, ytr, steps=150, lr=0.03)
    acc_fp32 = _accuracy(fp32, xte, yte)

    ptq = copy.deepcopy(fp32)
    dl.quantize_model(ptq, CONFIG, calibration=[xtr])
    acc_ptq = _accuracy(ptq, xte, yte)

    qat = copy.deepcopy(fp32)
    dl.quantize_model(qat, CONFIG, calibration=[xtr])
    _train(qat, xtr, ytr, steps=60, lr=0.01)
    acc_qat = _accuracy(qat, xte, yte)

    assert acc_fp32 > 0.94
    assert acc_qat > acc_ptq + 0.015, (acc_fp32, acc_ptq, acc_qat)
    # the trained weights are the restorable originals: restore gives the QAT-trained FP32 model
    dl.restore(qat)
    assert all(type(m) in (nn.Sequential, nn.Linear, nn.ReLU) for m in qat.modules())
