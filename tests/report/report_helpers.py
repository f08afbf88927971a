"""A small synthetic results set (two workloads, the default cells, realistic numbers and item counts), for report
tests that must run in seconds."""

from __future__ import annotations

from pathlib import Path

import dtypelab.experiments.sweep as sw

# (cell, bits per weight, top-1 correct of 360 without / with adaptive scaling, recall@1 hits of 435 without / with)
CELLS = [
    ("fp32", 32.0, 355, 355, 236, 236), ("e4m3", 8.0, 355, 354, 233, 237), ("e5m2", 8.0, 353, 355, 230, 234),
    ("posit(8,0)", 8.0, 354, 355, 235, 236), ("posit(8,1)", 8.0, 355, 355, 236, 235),
    ("posit(6,0)", 6.0, 120, 351, 20, 226), ("posit(6,1)", 6.0, 300, 352, 150, 231),
    ("lp(8,2,2,0)", 8.0, 354, 354, 234, 236), ("lp(6,1,2,0)", 6.0, 340, 350, 210, 228),
    ("dt8", 8.5, 355, 355, 236, 236), ("dt6", 6.5, 354, 355, 233, 235), ("dt4", 4.5, 330, 345, 180, 205),
    ("dt3", 3.5, 200, 290, 60, 120), ("int8/tensor", 8.0, 355, 355, 235, 236),
    ("int8/channel", 8.01, 355, 355, 236, 236), ("nf4/block:64", 4.5, 347, 350, 215, 220),
    ("mxfp8", 8.25, 355, 355, 236, 236), ("mxfp4", 4.25, 340, 340, 200, 200),
]


def synthetic_store(directory: Path) -> sw.ResultStore:
    """A result store in ``directory`` holding a digits-like (top1 of 360 images) and a minilm-like workload
    (recall@1 of 435 queries, with fidelity)."""
    with sw.ResultStore(directory) as store:  # (closed again: the report needs no lock)
        for cell, bits, t_none, t_adapt, r_none, r_adapt in CELLS:
            for scaling, top, hits in (("none", t_none, r_none), ("adaptive", t_adapt, r_adapt)):
                size = bits * 1.2e6 / 8e6
                store.results[f"digits-vgg|{cell}|{scaling}"] = sw.Result(
                    "digits-vgg", cell, scaling, cell, cell, "top1",
                    {"top1": 100.0 * top / 360, "loss": 0.1, "n": 360.0}, bits, size, 4.8, 1e-5 * (32 - bits), 1.0,
                    1000.0 * bits)
                store.results[f"minilm|{cell}|{scaling}"] = sw.Result(
                    "minilm", cell, scaling, cell, cell, "recall@1",
                    {"recall@1": hits / 435, "fidelity": 1 - (32 - bits) / 400, "n_queries": 435.0,
                     "n_topics": 60.0}, bits, size * 18, 90.0, 1e-6 * (32 - bits), 1.0, None)
    return store
