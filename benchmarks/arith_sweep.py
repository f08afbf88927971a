"""The accumulator study on MiniLM (:mod:`dtypelab.experiments.arith`): writes ``runs/arith/section.md`` and
``runs/arith/rows.json`` and prints the section.

    python benchmarks/arith_sweep.py [--limit TOPICS] [--cells LABEL ...]
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")

import dtypelab as dl  # noqa: E402
from dtypelab._io import atomic_write  # noqa: E402
from dtypelab.experiments import arith  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=None, help="evaluate on the first TOPICS topics")
    ap.add_argument("--cells", nargs="*", help="cell labels ('e4m3 | bf16' ...); default: all")
    ap.add_argument("--out", default="runs/arith")
    args = ap.parse_args()
    cells = [c for c in arith.default_cells() if not args.cells or c.label in args.cells]
    rows = arith.run(dl.workloads.get("minilm"), cells, limit=args.limit)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = arith.section(rows, limit=args.limit)
    atomic_write(out / "section.md", text)
    atomic_write(out / "rows.json", json.dumps(rows, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
