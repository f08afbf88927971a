"""Training runs rendered: the curves (loss and the primary metric per epoch, every run beside FP32), a table of
final figures, and the files of a run directory (``curves.json``, ``curves.csv``, ``curves.png``, ``report.md``,
``report.html``).

Example:
    >>> import tempfile, pathlib
    >>> from dtypelab.experiments.train import TrainRun
    >>> runs = [TrainRun("fp32", "toy", "top1", {}, [1, 2], [1.0, 0.5], [50.0, 80.0], [1.1, 0.6], [60.0, 85.0],
    ...                  {"exp_avg": 64}, 32.0)]
    >>> out = pathlib.Path(tempfile.mkdtemp())
    >>> sorted(p.name for p in write(runs, out, "toy"))
    ['curves.csv', 'curves.json', 'curves.png', 'report.html', 'report.md']
    >>> table(runs)[1][0][:3]
    ['fp32', 85.0, 85.0]
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dtypelab._io import atomic_write
from dtypelab.report.document import Document

__all__ = ["table", "plot_curves", "section", "write"]


def table(runs: Sequence[Any]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: final and best primary metric, final train loss, state bits/param, skipped steps, time."""
    key = runs[0].primary_metric if runs else "metric"
    header = ["run", f"final {key}", f"best {key}", "final train loss", "state bits/param", "skipped steps", "s"]
    rows = [[r.label, round(r.final, 2), round(max(r.test_metric, default=float("nan")), 2),
             round(r.train_loss[-1], 4) if r.train_loss else float("nan"), round(r.state_bits_per_param, 3),
             r.skipped_steps, round(r.seconds, 1)] for r in runs]
    return header, rows


def plot_curves(runs: Sequence[Any], path: str | Path, title: str = "training") -> Path:
    """Train loss and test primary metric per epoch of every run (FP32 runs in black, dashed) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from dtypelab.report.colors import FP32, PALETTE

    fig = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax_loss, ax_acc = fig.subplots(1, 2)
    others = 0
    for r in runs:
        fp32 = r.label.lower().startswith("fp32")
        style = {"color": FP32, "linestyle": "--"} if fp32 else {"color": PALETTE[others % len(PALETTE)]}
        others += not fp32
        ax_loss.plot(r.epoch, r.train_loss, marker="o", label=r.label, **style)
        ax_acc.plot(r.epoch, r.test_metric, marker="o", label=r.label, **style)
    key = runs[0].primary_metric if runs else "metric"
    ax_loss.set(title="train loss / epoch", xlabel="epoch", ylabel="cross-entropy")
    ax_acc.set(title=f"test {key} / epoch", xlabel="epoch", ylabel=key)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return atomic_write(path, lambda t: fig.savefig(t, format="png"))


def section(doc: Document, runs: Sequence[Any], curves: Path, title: str) -> Document:
    """Append the training section (table and curves) to a report document."""
    doc.heading(f"Training: {title}")
    doc.table(*table(runs))
    doc.image(curves, f"{title}: train loss and test {runs[0].primary_metric if runs else 'metric'} per epoch; "
                      "FP32 (same seed and schedule) dashed in black")
    return doc


def _csv(runs: Sequence[Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["run", "epoch", "train_loss", "train_acc", "test_loss", "test_metric"])
    for r in runs:
        for i, e in enumerate(r.epoch):
            w.writerow([r.label, e, r.train_loss[i], r.train_acc[i], r.test_loss[i], r.test_metric[i]])
    return buf.getvalue()


def write(runs: Sequence[Any], out_dir: str | Path, title: str) -> list[Path]:
    """Write the curves (JSON, CSV, PNG) and the report (Markdown, HTML) into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [atomic_write(out / "curves.json", json.dumps([r.to_dict() for r in runs], indent=1)),
             atomic_write(out / "curves.csv", _csv(runs)),
             plot_curves(runs, out / "curves.png", title)]
    doc = section(Document(f"dtypelab train: {title}"), runs, paths[2], title)
    paths.append(atomic_write(out / "report.md", doc.markdown(relative_to=out)))
    paths.append(atomic_write(out / "report.html", doc.html()))
    return paths
