"""One colour per format across every figure of a report (the decimal-accuracy curves, the weight histograms'
regions, the metric-vs-bits points), so a format is recognised by its colour everywhere.

Example:
    >>> color_of("posit(6,1)") == color_of("posit(6,1)/tensor/log2-hist*") != color_of("e4m3")
    True
"""

from __future__ import annotations

import zlib

# matplotlib's tab20 palette (dark then light of each hue), spelled out: importing matplotlib is not needed
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d",
           "#9edae5")
KNOWN = ("posit(8,1)", "posit(6,1)", "e4m3", "lp(8,2,2,0)", "lp(6,1,2,0)", "e5m2", "int8", "posit(8,0)",
         "posit(6,0)", "dt8", "dt6", "dt4", "nf4", "mxfp8", "mxfp4", "dt7", "dt5", "dt3", "int4")
FP32 = "#000000"


def format_name(label: str) -> str:
    """The format of a sweep cell or scheme label: ``'int8/channel'`` -> ``'int8'``, ``'posit(6,1)*'`` ->
    ``'posit(6,1)'``."""
    return label.split("/")[0].rstrip("*")


def color_of(label: str) -> str:
    """The colour of a format (or of a cell / scheme label, by its format); FP32 is black."""
    name = format_name(label)
    if name == "fp32":
        return FP32
    if name in KNOWN:
        return PALETTE[KNOWN.index(name)]
    return PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


__all__ = ["color_of", "format_name", "PALETTE"]
