"""Training runs: ``dtypelab train`` through typer's runner on a tiny config (curves, report, FP32 beside it; one
line and exit code 2 for bad input), and the loop itself on a small MLP task (FP32 formats change nothing,
formats do, a run is reproducible)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dtypelab.cli import app
from dtypelab.experiments.train import TrainConfig, TrainTask, fp32_config, train

TINY = """\
epochs: 1
batch_size: 16
train_limit: 16
test_limit: 16
quant:
  weights: e4m3/tensor/absmax
  backward: {error: e5m2/tensor/absmax//sr}
optimizer:
  weight: bf16/tensor/none//sr
  states: {exp_avg: dt8/block:256/absmax, exp_avg_sq: udt8/block:256/absmax}
loss_scale: dynamic
"""


def test_cli_trains_digits_vgg_under_a_config(tmp_path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "-w", "digits-vgg", "--config", str(config), "--out", str(out),
                                      "--seed", "1"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"curves.json", "curves.csv", "curves.png", "report.md", "report.html"}
    runs = json.loads((out / "curves.json").read_text())
    assert [r["label"] for r in runs] == ["fp32", "tiny"]
    assert all(r["epoch"] == [1] and len(r["test_metric"]) == 1 and r["config"]["seed"] == 1 for r in runs)
    assert runs[0]["state_bits_per_param"] == 64.0 and 16.25 <= runs[1]["state_bits_per_param"] < 16.3
    assert runs[1]["config"]["quant"]["backward"]["error"] == "e5m2/tensor/absmax//sr"
    assert "Training: digits-vgg" in (out / "report.md").read_text() and "| tiny |" in result.output
    assert len((out / "curves.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("args, needle", [
    (["-w", "cifar10"], "trainable: digits-vgg"),
    (["-w", "digits-vgg", "--epochs", "0"], "epochs must be a positive integer"),
    (["-w", "digits-vgg", "--config", "missing.yaml"], "does not exist"),
])
def test_cli_bad_input_is_one_line(args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["train", *args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], result.stderr


@pytest.mark.parametrize("text, needle", [
    ("optimizer: {name: lion}", "unknown optimizer 'lion'"),
    ("optimizer: {weight: posit9}", "weight: scheme 'posit9' does not parse"),
    ("loss_scale: static:-2", "finite number > 0"),
    ("quant: {backward: {eror: e5m2}}", "eror"),
    ("epoch: 3", "epoch"),
    ("[1, 2]", "must hold a mapping"),
])
def test_cli_bad_config_is_one_line(tmp_path, text: str, needle: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = CliRunner().invoke(app, ["train", "-w", "digits-vgg", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def _mlp_task() -> TrainTask:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 12, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()

    def evaluate(model, limit=None):
        with torch.no_grad():
            logits = model(x[:48])
        return {"top1": 100.0 * float((logits.argmax(1) == y[:48]).float().mean()),
                "loss": float(torch.nn.functional.cross_entropy(logits, y[:48]))}

    return TrainTask("mlp", "top1", lambda: torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(),
                                                                torch.nn.Linear(32, 3)),
                     x, y, evaluate, lambda: [x[:16]], epochs=3, batch_size=16, lr=1e-2, weight_decay=1e-4)


def _curves(config: dict) -> list[list[float]]:
    run = train("mlp", config, task=_mlp_task())
    return [run.train_loss, run.train_acc, run.test_loss, run.test_metric]


def test_fp32_formats_train_exactly_as_fp32_and_runs_reproduce() -> None:
    fp32_words = {"optimizer": {"weight": "fp32", "grad": "float32", "states": "fp32", "master_weights": True},
                  "quant": {"weights": None, "backward": {"error": "fp32"}}}
    assert _curves({}) == _curves(fp32_words)
    bf16 = {"optimizer": {"weight": "bf16/tensor/none//sr", "name": "sgd", "lr": 0.05},
            "quant": {"backward": {"error": "e5m2/tensor/absmax//sr", "weight_grad": "e4m3/tensor/absmax"}}}
    assert _curves(bf16) == _curves(bf16)
    assert _curves(bf16) != _curves(fp32_config(TrainConfig.coerce(bf16)).model_dump())
