"""Block-wise quantization throughput, timed side by side in one run and printed as ratios.

On 16 M float32 elements: ``dl.quantize`` (codes + scales, exact) for DT8 in blocks of 4096 and 256 and MXFP8,
next to ``y.copy_(x)`` (the memory-bandwidth limit), torch's fp8 round trip, and — where installed —
bitsandbytes' CPU ``quantize_blockwise`` (inexact, see REFERENCE.md). Target: >= 0.25x copy_ while exact.
For scale, with no target: ``dl.fake_quantize`` of the same schemes and ``dl.quantize`` to MXFP4 (4-bit codes,
packed two per byte).

    python benchmarks/schemes.py [--numel 16777216] [--repeats 9]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import dtypelab as dl

sys.path.insert(0, str(Path(__file__).parent))
from formats import best_times  # noqa: E402  (the shared interleaved timer)

SCHEMES = ("dt8/block:4096/absmax", "dt8/block:256/absmax", "mxfp8")
FOR_SCALE = ("mxfp4",)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=1 << 24)
    parser.add_argument("--repeats", type=int, default=9)  # best of 9: this shared machine is noisy
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.randn(args.numel)
    y = torch.empty_like(x)
    fns = {"copy_": lambda: y.copy_(x), "fp8 round trip": lambda: x.to(torch.float8_e4m3fn).to(torch.float32)}
    for spec in SCHEMES:
        scheme = dl.Scheme.parse(spec)
        dl.quantize(x[:4096], scheme)  # warm-up: tables and kernels
        fns[spec] = lambda scheme=scheme: dl.quantize(x, scheme)
        fns[f"fake {spec}"] = lambda scheme=scheme: dl.fake_quantize(x, scheme)
    for spec in FOR_SCALE:
        fns[spec] = lambda spec=spec: dl.quantize(x, spec)
    try:
        import bitsandbytes.functional as bnb

        for block in (4096, 256):
            fns[f"bitsandbytes dt8/block:{block}"] = lambda block=block: bnb.quantize_blockwise(x, blocksize=block)
    except ImportError:
        print("bitsandbytes not installed: its column is left out")
    times = best_times(fns, args.repeats)
    copy = times["copy_"]
    print(f"{args.numel} float32 elements, {torch.get_num_threads()} threads; G elements/s and ratio to copy_")
    print(f"{'what':32} {'G/s':>7} {'x copy_':>8}  target")
    for name, t in times.items():
        mark = "" if name not in SCHEMES else (
            "ok (>= 0.25)" if copy / t >= 0.25 else "MISS (>= 0.25)")
        print(f"{name:32} {args.numel / t / 1e9:7.3f} {copy / t:8.2f}  {mark}")


if __name__ == "__main__":
    main()
