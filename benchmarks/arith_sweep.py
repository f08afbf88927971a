"""The accumulator study on MiniLM (:mod:`dtypelab.experiments.arith`, as ``dtypelab arith`` with progress lines):
writes ``runs/arith/arith.json`` and ``runs/arith/arith.md`` and prints the section.

    python benchmarks/arith_sweep.py [--limit TOPICS] [--cells LABEL ...]
"""

from __future__ import annotations

import argparse
import os
import warnings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import dtypelab as dl  # noqa: E402
from dtypelab.experiments import arith  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first TOPICS topics")
    ap.add_argument("--cells", nargs="*", help="cell labels ('e4m3 | bf16' ...); default: all")
    ap.add_argument("--out", default="runs/arith")
    args = ap.parse_args()
    cells = [c for c in arith.default_cells() if not args.cells or c.label in args.cells]
    rows = arith.run(dl.workloads.get("minilm"), cells, limit=args.limit)
    arith.write(rows, args.out, "minilm", args.limit)
    print(arith.section(rows, limit=args.limit))


if __name__ == "__main__":
    main()
