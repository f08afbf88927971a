"""What simulating the arithmetic costs: a MiniLM forward with simulated accumulators beside the plain FP32 forward.

One batch of the MiniLM workload's passages (32 texts, by length) runs through the FP32 model and through the same
model with a ``compute:`` config on every Linear layer and on the BERT attention's Q·Kᵀ and A·V (``ops:``), in one
run, interleaved, ``--repeats`` times; the table gives min / median / max of the time ratio to FP32. Rows:

* format accumulators (``fp32``, ``bf16``, ``fp16`` with chunks of 32 products, ``bf16`` with 128) (each chunk summed by
  one float64 matmul, then one rounding into the accumulator);
* ``bf16`` with ``precision: fp32`` (chunk sums in float32);
* on a smaller batch (``--small-texts``), each ratio against FP32 on that batch: ``bf16`` with ``chunk: 1``
  (a rounding after every product: the exact per-product accumulator) and the ``quire`` (exact). The
  tensor-core model's cost is in the accumulator study's seconds (``benchmarks/arith_sweep.py``).

    python benchmarks/arith.py [--repeats 3] [--texts 32] [--small-texts 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import time
import warnings

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
logging.getLogger("torchao").setLevel(logging.ERROR)

import dtypelab as dl  # noqa: E402
from dtypelab._markdown import markdown_table  # noqa: E402

TARGET = 4.0


def config(compute: dict) -> dict:
    return {"compute": compute, "ops": [{"match": "BertSelfAttention", "compute": compute}]}


ROWS = [(f"{acc}, chunk {c}", {"accumulator": acc, "chunk": c}) for acc, c in
        (("fp32", 32), ("bf16", 32), ("bf16", 128), ("fp16", 32))]
ROWS += [("bf16, chunk 32, precision fp32", {"accumulator": "bf16", "chunk": 32, "precision": "fp32"})]
SMALL = [("bf16, chunk 1 (per product)", {"accumulator": "bf16", "chunk": 1}),
         ("quire", {"accumulator": "quire"})]


def _time(model: torch.nn.Module, batch: dict) -> float:
    t = time.perf_counter()
    with torch.no_grad():
        model(**batch)
    return time.perf_counter() - t


def measure(model: torch.nn.Module, batch: dict, compute: dict, repeats: int) -> tuple[list[float], float]:
    """Ratios of the simulated forward's time to the FP32 forward's (interleaved), and the output's cosine."""
    with torch.no_grad():
        ref = model(**batch)
    ratios = []
    for _ in range(repeats):
        base = _time(model, batch)
        dl.quantize_model(model, config(compute))
        sim = _time(model, batch)
        dl.restore(model)
        ratios.append(sim / base)
    dl.quantize_model(model, config(compute))
    with torch.no_grad():
        out = model(**batch)
    dl.restore(model)
    cos = float(torch.nn.functional.cosine_similarity(out, ref, dim=-1).min())
    return ratios, cos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--small-texts", type=int, default=4)
    args = ap.parse_args()
    w = dl.workloads.get("minilm")
    model = w.model()
    batch = w.calibration(1, batch_size=args.texts)[0]
    small = w.calibration(1, batch_size=args.small_texts)[0]
    _time(model, batch)  # warm up
    tokens = int(batch["attention_mask"].numel())
    print(f"MiniLM forward, {args.texts} texts x {batch['input_ids'].shape[1]} tokens ({tokens} positions), "
          f"{torch.get_num_threads()} threads, {args.repeats} repeats; FP32 forward "
          f"{1000 * statistics.median(_time(model, batch) for _ in range(3)):.0f} ms")
    rows = []
    for label, compute in [*ROWS, *SMALL]:
        b = small if (label, compute) in SMALL else batch
        ratios, cos = measure(model, b, compute, args.repeats)
        n = args.small_texts if b is small else args.texts
        rows.append([label, n, f"{min(ratios):.2f}", f"{statistics.median(ratios):.2f}", f"{max(ratios):.2f}",
                     "yes" if max(ratios) <= TARGET else "no", f"{cos:.5f}"])
        print(f"  {label}: {statistics.median(ratios):.2f}x", flush=True)
    print()
    print(markdown_table(["compute (every Linear + attention matmuls)", "texts", "min x FP32", "median x FP32",
                          "max x FP32", f"<= {TARGET:g}x", "min cos vs FP32"], rows))


if __name__ == "__main__":
    main()
