"""Training figures on digits-vgg from scratch, one seed and schedule for every run (the workload's: Adam, one-cycle
LR, 4 epochs): FP32; bf16 weights with nearest vs stochastic updates; posit(8,1) forward and backward (stochastic
rounding in the backward); e4m3 forward / e5m2 backward; 8-bit dynamic-tree Adam states; and bitsandbytes' CPU
Adam8bit where it is installed (``pip install bitsandbytes``, an optional benchmark dependency). Prints the table
beside the figures measured before, and writes curves and a report into the run directory.

    nice .venv/bin/python benchmarks/training_figures.py [--seeds 0 1 2] [--out runs/training-figures]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from dtypelab._markdown import markdown_table
from dtypelab.experiments.train import OPTIMIZERS, TrainRun, train
from dtypelab.report import training_report

DT8_STATES = {"exp_avg": "dt8/block:256/absmax", "exp_avg_sq": "udt8/block:256/absmax"}
POSIT = "posit(8,1)/tensor/log2-energy"
CONFIGS: dict[str, dict] = {  # in the order they run
    "fp32": {},
    "DT8 Adam states": {"optimizer": {"states": DT8_STATES}},
    "bitsandbytes Adam8bit": {"optimizer": {"name": "bnb-adam8bit"}},
    "bf16 weights, nearest": {"optimizer": {"weight": "bf16/tensor/none"}},
    "bf16 weights, stochastic": {"optimizer": {"weight": "bf16/tensor/none//sr"}},
    "e4m3 fwd / e5m2 bwd": {"quant": {"weights": "e4m3/tensor/absmax", "activations": "e4m3/tensor/absmax",
                                      "activation_scales": "dynamic",
                                      "backward": {"error": "e5m2/tensor/absmax", "weight_grad": "e5m2/tensor/absmax"}},
                            "loss_scale": "dynamic"},
    "posit(8,1) fwd+bwd, SR": {"quant": {"weights": POSIT, "activations": POSIT, "activation_scales": "dynamic",
                                         "backward": {"error": POSIT + "//sr", "weight_grad": POSIT + "//sr"}}},
}
BEFORE = {"fp32": 98.47, "bf16 weights, nearest": 97.92, "bf16 weights, stochastic": 98.33,
          "posit(8,1) fwd+bwd, SR": 96.67, "e4m3 fwd / e5m2 bwd": 98.06, "DT8 Adam states": 98.06,
          "bitsandbytes Adam8bit": 98.33}


def _bnb_available() -> bool:
    try:
        import bitsandbytes as bnb
    except Exception:  # not installed, or no backend for this machine
        return False

    def adam8bit(params, spec):
        return bnb.optim.Adam8bit(params, lr=spec.lr, weight_decay=spec.weight_decay)

    OPTIMIZERS["bnb-adam8bit"] = adam8bit
    return True


def bnb_bits_per_param(min_8bit_size: int = 4096, block: int = 256) -> float:
    """What bitsandbytes' Adam8bit stores per parameter of the model: two 8-bit states and one float32 absmax per
    block of 256 for tensors of at least ``min_8bit_size`` elements (its default), two float32 states otherwise."""
    from dtypelab.workloads.digits import VGG

    sizes = [p.numel() for p in VGG(in_channels=1).parameters()]
    bits = sum(2 * (8 * n + 32 * -(-n // block)) if n >= min_8bit_size else 64 * n for n in sizes)
    return bits / sum(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--train-limit", type=int, default=None, help="train on the first N images (a smoke test)")
    parser.add_argument("--only", nargs="+", default=None, help="run only these labels")
    parser.add_argument("--out", type=Path, default=Path("runs/training-figures"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    have_bnb = _bnb_available()
    labels = [k for k in CONFIGS
              if (have_bnb or not k.startswith("bitsandbytes")) and (not args.only or k in args.only)]
    results: dict[str, list[TrainRun]] = {k: [] for k in labels}
    for seed in args.seeds:
        runs = []
        for label in labels:
            cfg = {**CONFIGS[label], "seed": seed, **({"epochs": args.epochs} if args.epochs else {}),
                   **({"train_limit": args.train_limit} if args.train_limit else {})}
            run = train("digits-vgg", cfg, label=label)
            if label.startswith("bitsandbytes"):
                run.state_bits, run.state_bits_per_param = {}, bnb_bits_per_param()
            results[label].append(run)
            runs.append(run)
            print(f"seed {seed} {label}: top-1 {run.final:.2f}, state bits/param {run.state_bits_per_param:.3f} "
                  f"({run.seconds:.0f} s); per epoch {[round(v, 2) for v in run.test_metric]}", flush=True)
            training_report.write(runs, args.out / f"seed{seed}", f"digits-vgg from scratch, seed {seed}")
    rows = []
    for label, runs in results.items():
        finals = [r.final for r in runs]
        shown = f"{finals[0]:.2f}" if len(finals) == 1 else f"{min(finals):.2f}-{max(finals):.2f}"
        rows.append([label, shown, BEFORE.get(label, ""), round(runs[0].state_bits_per_param, 3),
                     round(sum(r.seconds for r in runs) / len(runs))])
    print()
    print(markdown_table(["run", f"top-1 % ({len(args.seeds)} seed(s))", "before", "state bits/param", "s/run"], rows))
    print(f"\ncurves and reports in {args.out}/seed*/")


if __name__ == "__main__":
    main()
