"""The result store: ``results.json`` (+ ``results.csv``) in a run directory, one row per cell.

Rows are rewritten atomically after every cell, so an interrupted run loses nothing and continues where it
stopped. A row records the settings it was computed under (``settings``: test-item limit, workload settings);
a run reuses a row only when they match. The run directory is locked while a store is open: a second
process that opens it gets :class:`RunDirBusy` naming the holder instead of silently overwriting its rows.

Example:
    >>> import tempfile
    >>> with ResultStore(tempfile.mkdtemp()) as store:
    ...     store.add(Result("w", "fp32", "none", None, None, "acc", {"acc": 1.0}, 32.0, 1.0, 1.0, 0.0, 0.1))
    ...     sorted(store.results)
    ['w|fp32|none']
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from dtypelab._io import atomic_write

__all__ = ["Result", "ResultStore", "RunDirBusy", "RunLock", "run_dir"]


@dataclass
class Result:
    """One row: a workload, a cell (format column) and a scaling row, with what :func:`evaluate` measured."""

    workload: str
    cell: str
    scaling: str
    weights: str | None
    activations: str | None
    primary_metric: str
    metrics: dict[str, float]
    bits_per_weight: float
    size_mb: float
    fp32_size_mb: float
    weight_mse: float
    seconds: float
    energy_pj: float | None = None
    settings: dict[str, Any] | None = None  # what else the row depends on; None: unknown (an older file)
    higher_is_better: bool = True  # the primary metric's direction (perplexity: lower is better)

    @property
    def key(self) -> str:
        return f"{self.workload}|{self.cell}|{self.scaling}"

    @property
    def primary(self) -> float:
        return self.metrics[self.primary_metric]


def run_dir(runs_dir: str | os.PathLike, name: str) -> Path:
    """``runs_dir/name``, refusing a name that is not one plain directory name (it could escape ``runs_dir``).

    >>> run_dir("runs", "../x")
    Traceback (most recent call last):
    ...
    ValueError: run name '../x' must be a plain directory name (no '/', '\\\\', '..' or absolute path)
    """
    if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name
            or os.path.isabs(name) or "\0" in name):
        raise ValueError(f"run name {name!r} must be a plain directory name (no '/', '\\\\', '..' or absolute path)")
    return Path(runs_dir) / name


class RunDirBusy(ValueError):
    """Another process holds the run directory's lock."""


class RunLock:
    """An exclusive lock on a directory (``.lock`` inside it, holding the owner's pid); released on close.

    The operating system drops the lock when its process dies, so a killed run never leaves it held.
    """

    def __init__(self, directory: str | os.PathLike, what: str = "run") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.dir / ".lock", "a+")  # noqa: SIM115 - held open for the lock's lifetime
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "unknown"
            self._fh.close()
            raise RunDirBusy(f"{what} directory {str(self.dir)!r} is in use by another dtypelab process (pid "
                             f"{holder}); wait for it to finish or write to another directory") from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(str(os.getpid()))
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_FIELDS = {f.name for f in fields(Result)}
_REQUIRED = {f.name for f in fields(Result) if f.default is not None}


class ResultStore:
    """The rows of a run directory, locked while open (use ``with`` or call ``close``)."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self._lock = RunLock(self.dir)
        self.path = self.dir / "results.json"
        self.results: dict[str, Result] = {}
        try:
            if self.path.exists():
                self.results = _read(self.path)
        except BaseException:
            self._lock.close()
            raise

    def add(self, result: Result) -> None:
        """Store ``result`` (replacing the row with its key) and rewrite the files."""
        self.results[result.key] = result
        rows = [asdict(r) for r in self.results.values()]
        atomic_write(self.path, json.dumps({"results": rows}, indent=1))
        atomic_write(self.dir / "results.csv", to_csv(self.results.values()))

    def close(self) -> None:
        self._lock.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _read(path: Path) -> dict[str, Result]:
    hint = "delete it or write to another run directory"
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read results file {str(path)!r} ({err}); {hint}") from None
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise ValueError(f"results file {str(path)!r} has no 'results' list; {hint}")
    out = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not _REQUIRED <= row.keys() or not row.keys() <= _FIELDS:
            got = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"results file {str(path)!r}: row {i} is not a result row (fields {got}); {hint}")
        r = Result(**row)
        if not isinstance(r.metrics, dict) or r.primary_metric not in r.metrics:
            raise ValueError(f"results file {str(path)!r}: row {i} has no metric {r.primary_metric!r}; {hint}")
        out[r.key] = r
    return out


def to_csv(results: Iterable[Result]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["workload", "cell", "scaling", "weights", "activations", "primary_metric", "primary",
                     "bits_per_weight", "size_mb", "fp32_size_mb", "weight_mse", "seconds", "energy_pj", "metrics"])
    for r in results:
        writer.writerow([r.workload, r.cell, r.scaling, r.weights, r.activations, r.primary_metric, r.primary,
                         r.bits_per_weight, r.size_mb, r.fp32_size_mb, r.weight_mse, r.seconds, r.energy_pj,
                         json.dumps(r.metrics)])
    return buf.getvalue()
