"""Throughput and model-level overhead per device, printed as ratios side by side with the reference in one run.

CPU (always):

* the cut-form formats (dt8, nf4, lp(8,2,2,0), lp(8,1,5,0.3)): ``f.quantize(x, out=y)`` / ``f.encode(x, out=c)``
  on ``--cpu-n`` float32 elements as a fraction of ``y.copy_(x)`` (target >= 0.45);
* MiniLM (the ``minilm`` workload) forward on one batch of 32 passages with posit(8,1) weights and activations
  (per-tensor, static calibrated scales) against the FP32 model: ``fake-quant time / FP32 time``, target <= 1.5.

GPU (only where CUDA is available; otherwise a line says the figures wait for a machine with one):

* ``--gpu-n`` (256 M) float32 elements on the device: quantize / encode of every format of at most 8 bits and
  the MXFP8 / DT8 block schemes as a fraction of ``copy_`` (target >= 0.7), beside torch's own
  ``x.to(float8_e4m3fn).to(float32)`` and, where they install, torchao's MX quantize and qtorch_plus'
  ``posit_quantize``;
* MiniLM and pydoc-gpt (where its trained model can be built) forward with per-tensor static fake quantization
  vs FP32 on the GPU (target <= 1.3).

Timing: best of ``--repeats`` interleaved rounds after a warm-up (CUDA: synchronised around each call). Report
ranges over several runs of the whole script, not one.

    python benchmarks/device.py [--cpu-n 16777216] [--gpu-n 268435456] [--repeats 9] [--skip-models]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import dtypelab as dl  # noqa: E402
from dtypelab.formats import STANDARD_FORMATS  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from formats import best_times  # noqa: E402  (the shared interleaved timer)

CUT_FORMATS = ("dt8", "nf4", "lp(8,2,2,0)", "lp(8,1,5,0.3)")
CUT_TARGET = 0.45
CPU_MODEL_TARGET, GPU_MODEL_TARGET, GPU_KERNEL_TARGET = 1.5, 1.3, 0.7
MODEL_CONFIG = {"weights": "posit(8,1)/tensor/absmax", "activations": "posit(8,1)/tensor/absmax",
                "activation_scales": "static"}
BLOCK_SCHEMES = ("mxfp8", "dt8/block:4096/absmax", "dt8/block:256/absmax")


def synced(fn: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``fn`` followed by a device synchronisation (so that wall time is the kernel's time)."""
    if device.type != "cuda":
        return fn

    def run() -> object:
        out = fn()
        torch.cuda.synchronize(device)
        return out

    return run


def verdict(ok: bool, target: str) -> str:
    return f"{'ok' if ok else 'MISS'} ({target})"


def kernel_table(specs: list[str], x: torch.Tensor, repeats: int, target: float) -> None:
    """quantize(out=) and encode(out=) of each format as a fraction of copy_, in interleaved rounds."""
    device = x.device
    y = torch.empty_like(x)
    print(f"{'format':<16}{'q(out=)/copy_':>15}{'enc(out=)/copy_':>17}  target")
    for spec in specs:
        f = dl.fmt(spec)
        codes, _ = f.engine.encode(x[:16])
        codes = torch.empty(x.shape, dtype=codes.dtype, device=device)
        f.quantize(x[:16])
        t = best_times({"copy": synced(lambda: y.copy_(x), device),
                        "q": synced(lambda f=f: f.quantize(x, out=y), device),
                        "enc": synced(lambda f=f, codes=codes: f.engine.encode(x, out=codes), device)}, repeats)
        rq, re_ = t["copy"] / t["q"], t["copy"] / t["enc"]
        print(f"{spec:<16}{rq:>15.2f}{re_:>17.2f}  {verdict(min(rq, re_) >= target, f'>= {target:g}')}")


def model_overhead(name: str, device: torch.device, repeats: int, target: float) -> None:
    """Forward time of the workload's model with MODEL_CONFIG's fake quantization over the FP32 model's."""
    try:
        wl = dl.workloads.get(name)
        batch = wl.calibration(1)[0]
        fp32 = wl.model()
    except Exception as e:  # noqa: BLE001 - a workload that cannot be built here is reported, not fatal
        print(f"{name}: not available here ({type(e).__name__}: {e})")
        return
    fq = copy.deepcopy(fp32)
    dl.quantize_model(fq, MODEL_CONFIG, calibration=[batch], stats=False)
    fp32, fq = fp32.to(device), fq.to(device)
    moved = {k: v.to(device) for k, v in batch.items()} if isinstance(batch, dict) else batch.to(device)

    def forward(model: torch.nn.Module) -> Callable[[], object]:
        def run() -> object:
            with torch.inference_mode():
                return wl.run(model, moved)
        return synced(run, device)

    t = best_times({"fp32": forward(fp32), "fake-quant": forward(fq)}, repeats)
    ratio = t["fake-quant"] / t["fp32"]
    shape = tuple(next(iter(moved.values())).shape) if isinstance(moved, dict) else tuple(moved.shape)
    print(f"{name} forward, batch {shape}: FP32 {1e3 * t['fp32']:.1f} ms, posit(8,1) fake-quant "
          f"{1e3 * t['fake-quant']:.1f} ms = {ratio:.2f}x  {verdict(ratio <= target, f'<= {target:g}x')}")


def cpu_part(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    x = torch.randn(args.cpu_n)
    print(f"== CPU: torch {torch.__version__}, {torch.get_num_threads()} threads, {args.cpu_n:,} float32 (randn)")
    kernel_table(list(CUT_FORMATS), x, args.repeats, CUT_TARGET)
    if not args.skip_models:
        model_overhead("minilm", torch.device("cpu"), args.repeats, CPU_MODEL_TARGET)


def gpu_baselines(x: torch.Tensor, repeats: int) -> None:
    """torch's e4m3 cast, torchao's MX quantize and qtorch_plus' posit rounding, where they install."""
    device = x.device
    y = torch.empty_like(x)
    fns: dict[str, Callable[[], object]] = {"copy": synced(lambda: y.copy_(x), device),
                                            "torch e4m3 cast": synced(
                                                lambda: x.to(torch.float8_e4m3fn).to(torch.float32), device)}
    try:  # pragma: no cover - optional
        from torchao.prototype.mx_formats.mx_tensor import MXTensor

        fns["torchao MXTensor.to_mx e4m3"] = synced(
            lambda: MXTensor.to_mx(x.view(-1, 32), torch.float8_e4m3fn, 32), device)
    except Exception as e:  # noqa: BLE001
        print(f"torchao MX quantize not available ({type(e).__name__})")
    try:  # pragma: no cover - optional
        from qtorch_plus.quant import posit_quantize

        fns["qtorch_plus posit_quantize(8,1)"] = synced(lambda: posit_quantize(x, 8, 1), device)
    except Exception as e:  # noqa: BLE001
        print(f"qtorch_plus not available ({type(e).__name__})")
    t = best_times(fns, repeats)
    for name, v in t.items():
        print(f"{name:<32}{x.numel() / v / 1e9:>9.2f} G/s {t['copy'] / v:>7.2f}x copy_")


def gpu_part(args: argparse.Namespace) -> None:
    if not torch.cuda.is_available():
        print("== GPU: no CUDA device here: the GPU figures wait for a machine that has one")
        return
    device = torch.device("cuda")
    torch.manual_seed(0)
    x = torch.randn(args.gpu_n, device=device)
    print(f"== GPU: {torch.cuda.get_device_name(device)}, {args.gpu_n:,} float32 (randn)")
    gpu_baselines(x, args.repeats)
    small = [str(dl.fmt(s)) for s in STANDARD_FORMATS if dl.fmt(s).bits <= 8]
    kernel_table(list(dict.fromkeys(small)), x, args.repeats, GPU_KERNEL_TARGET)
    y = torch.empty_like(x)
    fns = {"copy": synced(lambda: y.copy_(x), device)}
    for spec in BLOCK_SCHEMES:
        scheme = dl.Scheme.parse(spec)
        dl.quantize(x[:4096], scheme)
        fns[spec] = synced(lambda scheme=scheme: dl.quantize(x, scheme), device)
        fns[f"fake {spec}"] = synced(lambda scheme=scheme: dl.fake_quantize(x, scheme), device)
    t = best_times(fns, args.repeats)
    for name, v in t.items():
        if name != "copy":
            ratio = t["copy"] / v
            print(f"{name:<32}{ratio:>7.2f}x copy_  {verdict(ratio >= GPU_KERNEL_TARGET, f'>= {GPU_KERNEL_TARGET}')}")
    if not args.skip_models:
        for name in ("minilm", "pydoc-gpt"):
            model_overhead(name, device, args.repeats, GPU_MODEL_TARGET)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-n", type=int, default=1 << 24)
    parser.add_argument("--gpu-n", type=int, default=1 << 28)
    parser.add_argument("--repeats", type=int, default=9)  # best of 9: this shared machine is noisy
    parser.add_argument("--skip-models", action="store_true")
    args = parser.parse_args()
    t0 = time.perf_counter()
    cpu_part(args)
    gpu_part(args)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
