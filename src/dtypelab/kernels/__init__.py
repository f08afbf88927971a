"""Fast exact rounding engines shared by all formats (see ``table``, ``lut``, ``posit_closed``, ``engine``).

numba keys a kernel's on-disk cache to its own source file only, but kernels here inline helpers from sibling
modules (``blockwise`` reads ``lut``'s lookup). So that an edited ``lut.py`` is never served by a kernel compiled
against the old one, cached kernels older than the newest source file here are dropped at import (and compiled
again on first use).
"""

from pathlib import Path


def _drop_stale_kernel_caches(here: Path = Path(__file__).parent) -> None:
    try:
        newest_source = max(p.stat().st_mtime for p in here.glob("*.py"))
        for index in (here / "__pycache__").glob("*.nbi"):
            if index.stat().st_mtime < newest_source:
                index.unlink(missing_ok=True)  # without its index, numba ignores (and rewrites) the data files
    except OSError:  # a read-only install: its sources and caches come from one installation anyway
        pass


_drop_stale_kernel_caches()
