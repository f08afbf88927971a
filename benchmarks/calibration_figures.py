"""Fair 4-bit weight / 8-bit activation comparisons: every format with the calibration the field gives it.

Weights (activations FP32, Embedding layers FP32): posit(4,1), lp(4,1,1,0), e2m1, nf4, dt4 and int4, all per
output channel with absmax scales (``channel:1`` on GPT-2's ``Conv1D``, whose weight is stored ``(in, out)``),
each rounded to nearest (``rtn``), by GPTQ (``method: gptq``) and after AWQ's scale search (``equalize: awq``,
then round to nearest). Activations (weights FP32): int8, e4m3 and posit(8,1) per tensor with static scales
from ``absmax``, ``percentile:99.99`` and ``entropy``. One calibration set for all
(the workload's first ``--batches`` calibration batches). Writes ``calibration.json``, ``calibration.md`` (the
Markdown tables) and ``report.md`` / ``report.html`` into ``--out``; the sweep report adds the same section when
it finds ``calibration.json`` in its run directory.

    nice python benchmarks/calibration_figures.py [--workload minilm] [--batches 4] [--limit N] [--out DIR]
    nice python benchmarks/calibration_figures.py --workload pydoc-gpt     # perplexity (trains on first use)
    nice python benchmarks/calibration_figures.py --cells 'weights/*/awq' 'activations/posit(8,1)/*'

Rows already in ``--out``'s ``calibration.json`` are kept and not recomputed, so a rerun computes only the missing
cells; ``--cells`` (shell-style patterns on ``PART/FORMAT/METHOD``) narrows it further. A cell whose config the
workload's layers refuse (a ``ValueError``: AWQ on GPT-2's ``Conv1D`` layers) is printed as not run and left blank.

Every number is one deterministic run (no sampling): calibration and evaluation use fixed data, so repeated runs
give the same table; the wall time per row is printed for scale only.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import time
from pathlib import Path

import torch

from dtypelab._io import atomic_write
from dtypelab.experiments.evaluate import evaluate
from dtypelab.model.layers import kind_of
from dtypelab.model.methods import TRANSPOSED
from dtypelab.report.calibration_report import METHODS, markdown, section
from dtypelab.report.document import Document

WEIGHT_FORMATS = ("posit(4,1)", "lp(4,1,1,0)", "e2m1", "nf4", "dt4", "int4")
ACTIVATION_FORMATS = ("int8", "e4m3", "posit(8,1)")
ACTIVATION_RULES = ("absmax", "percentile:99.99", "entropy")
FP32_EMBEDDINGS = {"match": "Embedding", "weights": None, "equalize": None}


def weight_config(fmt: str, method: str, in_out_kinds: tuple[str, ...] = ()) -> dict:
    """4-bit weights in ``fmt`` per output channel (absmax), rounded by ``method`` (:data:`METHODS`).
    ``in_out_kinds``: layer kinds whose weight is stored ``(in, out)`` (GPT-2's ``Conv1D``), whose output
    channels are axis 1 (``channel:1``)."""

    def weights(spec: str) -> str | dict:
        return {"scheme": spec, "method": "gptq"} if method == "gptq" else spec

    config = {"weights": weights(f"{fmt}/channel/absmax"), "layers": [
        *({"match": kind, "weights": weights(f"{fmt}/channel:1/absmax")} for kind in in_out_kinds),
        FP32_EMBEDDINGS]}
    if method == "awq":
        config["equalize"] = "awq"
    return config


def activation_config(fmt: str, rule: str) -> dict:
    """8-bit activations in ``fmt`` per tensor, static scales by ``rule``; FP32 weights."""
    return {"activations": f"{fmt}/tensor/{rule}", "activation_scales": "static"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-w", "--workload", default="minilm")
    parser.add_argument("--batches", type=int, default=4, help="calibration batches")
    parser.add_argument("--limit", type=int, default=None, help="evaluate on the first N test items")
    parser.add_argument("--out", default=None, help="run directory (default runs/calibration-WORKLOAD); a sweep's "
                        "run directory adds the section to its report")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", nargs="+", default=["fp32", "weights", "activations"],
                        help="which rows to compute (several processes can share the work, one --out each; "
                             "merge their calibration.json rows and rerun to write the tables)")
    parser.add_argument("--formats", nargs="+", default=None, help="only these formats (default all)")
    parser.add_argument("--cells", nargs="+", default=None, metavar="PART/FORMAT/METHOD",
                        help="only the cells matching one of these shell-style patterns, e.g. 'weights/nf4/awq' "
                             "'activations/*/entropy' (the fp32 row is fp32/fp32/none)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from dtypelab import workloads

    wl = workloads.get(args.workload)
    calib = wl.calibration(args.batches)
    out = Path(args.out or f"runs/calibration-{wl.name}")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "calibration.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    if done.get("settings", {}) not in ({}, {"batches": args.batches, "limit": args.limit}):
        raise SystemExit(f"{path} holds another run (settings {done['settings']}): use another --out")
    rows = done.get("rows", [])
    seen = {(r["part"], r["format"], r["method"]) for r in rows}
    jobs = [("fp32", "fp32", "none", None)]
    in_out = tuple(sorted({k.name for m in wl.model().modules() if (k := kind_of(m)) and k.name in TRANSPOSED}))
    jobs += [("weights", f, m, weight_config(f, m, in_out)) for f in WEIGHT_FORMATS for m in METHODS]
    jobs += [("activations", f, r, activation_config(f, r)) for f in ACTIVATION_FORMATS for r in ACTIVATION_RULES]
    for part, fmt, method, config in jobs:
        if (part, fmt, method) in seen or part not in args.parts or (args.formats and part != "fp32"
                                                                       and fmt not in args.formats):
            continue
        if args.cells and not any(fnmatch.fnmatchcase(f"{part}/{fmt}/{method}", c) for c in args.cells):
            continue
        start = time.perf_counter()
        try:
            o = evaluate(wl, config, limit=args.limit, calibration=calib if config else None, energy=False)
        except ValueError as e:  # a method this workload's layers do not support: the cell stays blank
            print(f"{part:11s} {fmt:12s} {method:17s} not run: {e}", flush=True)
            continue
        rows.append({"part": part, "format": fmt, "method": method, "metrics": o.metrics,
                     "primary_metric": o.primary_metric, "bits_per_weight": o.bits_per_weight,
                     "seconds": time.perf_counter() - start})
        print(f"{part:11s} {fmt:12s} {method:17s} {o.primary_metric}={o.primary:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        atomic_write(path, json.dumps({"workload": wl.name, "settings": {"batches": args.batches, "limit": args.limit},
                                       "rows": rows}, indent=1))
    result = json.loads(path.read_text())
    atomic_write(out / "calibration.md", markdown(result) + "\n")
    doc = Document(f"{wl.name}: calibration for every format")
    section(doc, result)
    atomic_write(out / "report.md", doc.markdown(relative_to=out))
    atomic_write(out / "report.html", doc.html())
    print(markdown(result))


if __name__ == "__main__":
    main()
