"""What simulating the arithmetic costs: a MiniLM forward with simulated accumulators beside the plain FP32 forward.

One batch of the MiniLM workload's passages (32 texts, by length) runs through the FP32 model and through the same
model with a ``compute:`` config on every Linear layer and on the BERT attention's Q·Kᵀ and A·V (``ops:``), in one
run, interleaved, ``--repeats`` times; the table gives min / median / max of the time ratio to FP32. Rows:

* format accumulators (``fp32``, ``bf16``, ``fp16`` with chunks of 32 products, ``bf16`` with 128) (each chunk summed by
  one float64 matmul, then one rounding into the accumulator);
* ``bf16`` with ``precision: fp32`` (chunk sums in float32);
* on a smaller batch (``--small-texts``), each ratio against FP32 on that batch: ``bf16`` with ``chunk: 1``
  (a rounding after every product: the exact per-product accumulator) and the ``quire`` (exact);
* one 648 x 384 x 1536 layer of e4m3 operands: the numba kernels of the tensor-core model (``align:13``, groups of
  32, promotion every 128) and of LP's fixed-point register against the torch loops over materialised products
  they replace (``product: fp32``: exact for e4m3 products, so the same bits), products per second and the ratio.

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
from dtypelab.arith import Compute  # noqa: E402

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
    """Ratios of the simulated forward's time to the FP32 forward's (interleaved), and the output's cosine (from
    an untimed simulated forward first, which also compiles what the kernels need for these operands)."""
    with torch.no_grad():
        ref = model(**batch)
        dl.quantize_model(model, config(compute))
        out = model(**batch)
        dl.restore(model)
    ratios = []
    for _ in range(repeats):
        base = _time(model, batch)
        dl.quantize_model(model, config(compute))
        sim = _time(model, batch)
        dl.restore(model)
        ratios.append(sim / base)
    cos = float(torch.nn.functional.cosine_similarity(out, ref, dim=-1).min())
    return ratios, cos


LAYER = [("align:13, group 32, chunk 128", {"accumulator": "align:13", "group": 32, "chunk": 128}),
         ("fixed(32,16)/rz, saturate", {"accumulator": "fixed(32,16)/rz", "overflow": "saturate"})]


def layer_rows(repeats: int) -> list[list[str]]:
    """Kernel against torch loops on one layer: median seconds, products/s, and whether the bits agree."""
    g = torch.Generator().manual_seed(0)
    e4m3 = dl.fmt("e4m3")
    a = e4m3.quantize(torch.randn(648, 384, generator=g, dtype=torch.float64))
    b = e4m3.quantize(torch.randn(384, 1536, generator=g, dtype=torch.float64))
    products = a.numel() * b.shape[1]
    rows = []
    for label, compute in LAYER:
        kernel, loops = Compute.parse(compute), Compute.parse({**compute, "product": "fp32"})
        same = torch.equal(kernel.matmul(a, b), loops.matmul(a, b))
        t_kernel = statistics.median(_seconds(kernel, a, b) for _ in range(repeats))
        t_loops = statistics.median(_seconds(loops, a, b) for _ in range(repeats))
        rows.append([label, f"{products / t_kernel / 1e6:.0f}", f"{products / t_loops / 1e6:.0f}",
                     f"{t_loops / t_kernel:.1f}", "yes" if same else "NO"])
    return rows


def _seconds(compute: Compute, a: torch.Tensor, b: torch.Tensor) -> float:
    t = time.perf_counter()
    compute.matmul(a, b)
    return time.perf_counter() - t


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
    print()
    print(markdown_table(["one layer, 648 x 384 x 1536, e4m3", "kernel M products/s", "torch loops M products/s",
                          "kernel speed-up", "same bits"], layer_rows(args.repeats)))


if __name__ == "__main__":
    main()
