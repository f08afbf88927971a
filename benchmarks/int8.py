"""Real int8 on the CPU beside dtypelab's simulation of the same config: latency, size on disk, accuracy.

Path: PyTorch 2 export quantization (torchao's ``prepare_pt2e``/``convert_pt2e`` with ``X86InductorQuantizer``:
static per-tensor uint8 activations, per-channel int8 weights), lowered by ``torch.compile`` (inductor with
freezing) to oneDNN int8 convolutions and matmuls. The eager ``torch.ao.quantization`` API is not used.
torchao's ``quantize_(Int8DynamicActivationInt8WeightConfig())`` was tried too: eager it runs ``aten::_int_mm``'s
reference kernel (MiniLM batch 32: 87 s vs 3.8 s FP32), compiled it is no faster than FP32 on this AVX2 CPU
(3.9 s vs 3.7 s), so it is not part of the table.

The X86 quantizer's linear+unary fusion annotator fails on the exported BERT graph (IndexError in
``_get_output_nodes_of_partitions`` with torchao 0.18 / torch 2.13); we switch that one fusion off, so each
Linear is still quantized, its GELU runs in float.

dtypelab's simulation of the same config: ``weights: int8/channel/absmax``, ``activations: int8/tensor/mse``
(static, calibrated on the same batches; MSE-clipped scale as the HistogramObserver's L2 search; Embeddings
stay FP32 as in pt2e), fake-quantized by ``dl.quantize_model``.

Inputs are padded to one fixed shape (digits: 256 images; MiniLM: 32 texts x 128 tokens, padding masked out)
so each compiled model compiles once. Latency is the median of several runs of that one batch, all taken in
this run. Never run by the test suite.

    python benchmarks/int8.py [--workloads digits-vgg minilm] [--iters 5]
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import tempfile
import time
import warnings
from typing import Any

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
logging.getLogger("torchao").setLevel(logging.ERROR)

import dtypelab as dl  # noqa: E402

SHAPES = {"digits-vgg": (256, None), "minilm": (32, 128)}


class Fixed(nn.Module):
    """Runs ``fn`` on inputs padded to one batch (and sequence) size; hides ``fn`` from train()/eval()."""

    def __init__(self, fn: Any, batch: int, seq: int | None) -> None:
        super().__init__()
        self._fn, self.batch, self.seq = [fn], batch, seq

    def pad(self, t: torch.Tensor) -> torch.Tensor:
        out = t.new_zeros((self.batch, self.seq) if t.dim() == 2 and self.seq else (self.batch, *t.shape[1:]))
        out[: t.shape[0], : t.shape[1]] = t
        return out

    def forward(self, x: Any = None, **kw: Any) -> torch.Tensor:
        n = (x if x is not None else kw["input_ids"]).shape[0]
        if x is not None:
            return self._fn[0](self.pad(x))[:n]
        return self._fn[0](**{k: self.pad(v) for k, v in kw.items()})[:n]


def fixed_example(example: Any, batch: int, seq: int | None) -> Any:
    pad = Fixed(None, batch, seq).pad
    return {k: pad(v) for k, v in example.items()} if isinstance(example, dict) else pad(example)


def call(fn: Any, x: Any) -> torch.Tensor:
    return fn(**x) if isinstance(x, dict) else fn(x)


def latency(fn: Any, x: Any, iters: int) -> float:
    with torch.inference_mode():
        call(fn, x)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            call(fn, x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def disk_mb(obj: Any) -> float:
    fd, path = tempfile.mkstemp(suffix=".pt")
    os.close(fd)
    try:
        torch.save(obj, path)
        return os.path.getsize(path) / 1e6
    finally:
        os.unlink(path)


def pt2e_int8(model: nn.Module, calib: list[Any], batch: int, seq: int | None) -> tuple[Any, float, nn.Module]:
    """Export, calibrate and convert with X86InductorQuantizer; returns (compiled model, seconds to build)."""
    import torch._inductor.config as inductor_config
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    class Quantizer(xiq.X86InductorQuantizer):
        def _annotate_linear_unary(self, *args: Any, **kwargs: Any) -> None:  # fails on BERT's graph, see top
            return None

    inductor_config.freezing = True
    start = time.perf_counter()
    example = fixed_example(calib[0], batch, seq)
    with torch.no_grad():
        kwargs = example if isinstance(example, dict) else None
        args = () if kwargs else (example,)
        exported = torch.export.export(model, args, kwargs=kwargs).module()
        q = Quantizer()
        q.set_global(xiq.get_default_x86_inductor_quantization_config())
        prepared = prepare_pt2e(exported, q)
        for b in calib:
            call(prepared, fixed_example(b, batch, seq))
        converted = convert_pt2e(prepared)
        compiled = torch.compile(converted)
        call(compiled, example)
    return compiled, time.perf_counter() - start, converted


def simulation_config(model: nn.Module) -> dict[str, Any]:
    cfg: dict[str, Any] = {"weights": "int8/channel/absmax", "activations": "int8/tensor/mse"}
    if any(isinstance(m, nn.Embedding) for m in model.modules()):
        cfg["layers"] = [{"match": "Embedding", "weights": None}]
    return cfg


def run(name: str, iters: int) -> list[list[str]]:
    wl = dl.workloads.get(name)
    batch, seq = SHAPES[name]
    calib = wl.calibration(8 if name == "digits-vgg" else 4)
    fp32 = wl.model()
    x = fixed_example(calib[0], batch, seq)
    metric = wl.primary_metric
    log = print

    log(f"[{name}] FP32 eager ...")
    t_fp32 = latency(fp32, x, iters)
    m_fp32 = wl.evaluate(fp32)[metric]
    size_fp32 = disk_mb(fp32.state_dict())

    log(f"[{name}] FP32 compiled ...")
    import torch._inductor.config as inductor_config
    inductor_config.freezing = True
    fp32c = torch.compile(copy.deepcopy(fp32))
    t_fp32c = latency(fp32c, x, iters)

    log(f"[{name}] int8 pt2e (X86InductorQuantizer) + inductor ...")
    int8, build_s, converted = pt2e_int8(copy.deepcopy(fp32), calib, batch, seq)
    t_int8 = latency(int8, x, iters)
    m_int8 = wl.evaluate(Fixed(int8, batch, seq))[metric]
    size_int8 = disk_mb(converted.state_dict())
    int8_weights_mb = sum(v.numel() * v.element_size() for v in converted.state_dict().values()
                          if v.dtype == torch.int8) / 1e6

    log(f"[{name}] dtypelab simulation ...")
    cfg = simulation_config(fp32)
    sim = wl.model()
    rep = dl.quantize_model(sim, cfg, calibration=calib)
    m_sim = wl.evaluate(sim)[metric]
    one = calib[0][:1] if not isinstance(calib[0], dict) else {k: v[:1] for k, v in calib[0].items()}
    e_fp32 = dl.cost.energy(fp32, None, example=one).total_pj
    e_int8 = dl.cost.energy(fp32, cfg, example=one).total_pj
    st = dl.cost.storage(fp32, cfg)

    return [
        [name, "FP32 eager", f"{1e3 * t_fp32:.1f}", "1.00", f"{size_fp32:.2f}", f"{m_fp32:.4f}", "", "", ""],
        [name, "FP32 inductor", f"{1e3 * t_fp32c:.1f}", f"{t_fp32 / t_fp32c:.2f}", "", "", "", "", ""],
        [name, f"int8 pt2e+inductor (build {build_s:.0f} s)", f"{1e3 * t_int8:.1f}", f"{t_fp32 / t_int8:.2f}",
         f"{size_int8:.2f} (int8 {int8_weights_mb:.2f})", f"{m_int8:.4f}", f"{m_sim:.4f}", f"{m_int8 - m_sim:+.4f}",
         f"{e_fp32 / e_int8:.2f}"],
        [name, "dtypelab storage model", "", "", f"{st.total_mb:.2f} (sim {rep.size_mb:.2f})", "", "", "",
         f"{st.compression:.2f}x size"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["digits-vgg", "minilm"])
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name in args.workloads:
        rows += run(name, args.iters)
    header = ["workload", "path", "latency ms", "speed-up vs FP32 eager", "size on disk MB",
              "metric real", "metric dtypelab sim", "real - sim", "est. energy FP32/int8"]
    from dtypelab._markdown import markdown_table

    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; metric = top1 % (digits), recall@1 (minilm)\n")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    main()
