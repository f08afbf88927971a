"""The ``dtypelab`` command. Thin: every command parses its options, calls the library, and prints.

This is the only module that formats console text. Every error the library raises for bad input (a bad spec,
an unknown or unavailable workload, a missing or malformed file, a directory that cannot be written, a corrupt
results file) ends the command with one line on stderr and exit code 2.

Example:
    $ dtypelab formats
    $ dtypelab formats plot "posit(8,1)" "lp(8,2,2,0)" e4m3 -o accuracy.png
    $ dtypelab sweep                                  # the default sweep -> runs/default/report.html
    $ dtypelab sweep --executor ray --limit 100       # the cells on a local Ray instance
    $ dtypelab quantize --workload digits-vgg --config config.yaml
    $ dtypelab quantize --workload digits-vgg --scheme "posit(6,1)/tensor/log2-hist"
    $ dtypelab search --workload digits-vgg --space lp --budget 5.0
    $ dtypelab search --workload digits-vgg --space "posit(6,1),posit(8,1)/channel/sqnr" --budget 7
    $ dtypelab cost --workload digits-vgg --config config.yaml
    $ dtypelab train -w digits-vgg --config train.yaml --out runs/train-bf16
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Exact low-precision formats and quantization.")
formats_app = typer.Typer(help="The number formats: a table, or their decimal-accuracy plot.")
app.add_typer(formats_app, name="formats")

from dtypelab.formats import STANDARD_FORMATS as DEFAULT_FORMATS  # noqa: E402


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _input_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean bad input (or an unusable file or directory), not a bug."""
    import yaml

    from dtypelab.workloads import WorkloadUnavailable

    return ValueError, TypeError, KeyError, OSError, yaml.YAMLError, WorkloadUnavailable


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) would quote it
    return " ".join(str(err).split()) or type(err).__name__


@contextlib.contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn the library's bad-input errors into one line on stderr and exit code 2."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as err:
        if isinstance(err, _input_errors()):
            _fail(_message(err))
        raise


def _config(config: Path | None, scheme: str | None, activations: str | None) -> Any:
    """``--config FILE`` (loaded now, so a bad file is named) or ``--scheme SPEC`` (+ ``--activations``)."""
    import yaml

    from dtypelab.model.config import QuantConfig

    if (config is None) == (scheme is None):
        raise ValueError("give exactly one of --config FILE (a YAML/JSON/TOML config) or --scheme SPEC "
                         "(one scheme, e.g. 'posit(6,1)/tensor/log2-hist')")
    if scheme is not None:
        return QuantConfig.coerce({"weights": scheme, "activations": activations})
    if activations is not None:
        raise ValueError("--activations goes with --scheme; a --config file sets its own activations")
    try:
        return QuantConfig.load(config)
    except yaml.YAMLError as err:
        raise ValueError(f"config file {str(config)!r} is not valid YAML: {' '.join(str(err).split())}") from None


def split_specs(text: str) -> list[str]:
    """Comma-separated specs, not split at the commas inside parentheses.

    >>> split_specs("posit(6,1), lp(8,2,2,0)/tensor/none,int8/channel/absmax")
    ['posit(6,1)', 'lp(8,2,2,0)/tensor/none', 'int8/channel/absmax']
    """
    parts, depth, current = [], 0, []
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    if depth != 0:
        raise ValueError(f"unbalanced parentheses in {text!r}")
    return [p.strip() for p in parts if p.strip()]


@formats_app.callback(invoke_without_command=True)
def formats_table(
    ctx: typer.Context,
    spec: Annotated[list[str] | None, typer.Option("--format", "-f", help="Formats to list (default: a standard set).")]
    = None,
) -> None:
    """Print bits, max, min positive, decades of dynamic range and values in [0.5, 2) of each format."""
    if ctx.invoked_subcommand is not None:
        return
    from dtypelab.report.tables import format_table

    with _one_line_errors():
        typer.echo(format_table(spec or DEFAULT_FORMATS))


@formats_app.command("roundings")
def formats_roundings() -> None:
    """List the rounding modes, overflow policies and subnormal flags (the ROUNDING part of a scheme)."""
    from dtypelab.kernels.rounding import MODES, OVERFLOW, SUBNORMAL_FLAGS

    rows = [("mode", f"{m.name}{'K' if m.stochastic else ''} ({m.long_name})", m.description) for m in MODES.values()]
    rows += [("overflow", name, text) for name, text in OVERFLOW.items()]
    rows += [("subnormals", name, text) for name, text in SUBNORMAL_FLAGS.items()]
    width = max(len(r[1]) for r in rows)
    for kind, name, text in rows:
        typer.echo(f"{kind:<11}{name:<{width + 2}}{text}")
    typer.echo("Write MODE[+OVERFLOW][+daz][+ftz], e.g. sr8+ovfinf; in a scheme: e4m3/tensor/absmax//sr8")


@formats_app.command("plot")
def formats_plot(
    specs: Annotated[list[str], typer.Argument(help="Format specs, e.g. 'posit(8,1)' e4m3")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write")],
) -> None:
    """Draw each format's decimal accuracy against log2|x| (the figures of the posit and LP papers)."""
    from dtypelab.report.plots import accuracy_plot

    with _one_line_errors():
        accuracy_plot(specs, output)
    typer.echo(f"wrote {output}")


UserModel = Annotated[str | None, typer.Option("--model", help="Your model: pkg.module:factory (no arguments).")]
UserEval = Annotated[str | None, typer.Option("--eval", help="Your metric: pkg.module:evaluate(model) -> dict.")]
UserCalib = Annotated[str | None, typer.Option("--calib", help="Calibration batches: pkg.module:batches().")]
LMModel = Annotated[Path | None, typer.Option("--lm-model", help="-w lm: a local Hugging Face causal LM directory.")]
LMText = Annotated[Path | None, typer.Option("--text", help="-w lm: the text file perplexity is measured on.")]
LMCalibText = Annotated[Path | None, typer.Option("--calib-text", help="-w lm: calibration text (default: a "
                                                  "held-out head of --text).")]
LMMaxLength = Annotated[int | None, typer.Option("--max-length", help="-w lm: window length (default: context).")]
LMStride = Annotated[int | None, typer.Option("--stride", help="-w lm: window stride (default: half a window).")]


def _lm(model: Path | None, text: Path | None, calib_text: Path | None, max_length: int | None,
        stride: int | None) -> dict[str, Any]:
    """The ``lm`` workload's arguments from the command line (only those given)."""
    given = {"model": model, "text": text, "calib_text": calib_text, "max_length": max_length, "stride": stride}
    return {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if v is not None}
Executor = Annotated[str, typer.Option(help="serial, process or ray (a local Ray instance).")]
Workers = Annotated[int | None, typer.Option(help="Workers for --executor process / ray (default: one per core).")]


def _workloads(names: list[str] | None, model: str | None, evaluate: str | None, calib: str | None,
               lm: dict[str, Any] | None = None) -> list:
    from dtypelab import workloads
    from dtypelab.experiments.sweep import DEFAULT_WORKLOADS

    if model or evaluate:
        if not (model and evaluate):
            raise ValueError("a user workload needs both --model and --eval")
        return [workloads.load_user(model=model, evaluate=evaluate, calib=calib)]
    names = names or list(DEFAULT_WORKLOADS)
    if lm and "lm" not in names:
        raise ValueError("--lm-model, --text, --calib-text, --max-length and --stride go with -w lm")
    return [workloads.get(n, **lm) if n == "lm" and lm else workloads.get(n) for n in names]


@app.command()
def sweep(
    name: Annotated[str | None, typer.Option(help="Run name: results go to RUNS_DIR/NAME (default 'default').")]
    = None,
    workload: Annotated[list[str] | None, typer.Option("--workload", "-w", help="Workloads (default: all).")] = None,
    fmt: Annotated[list[str] | None, typer.Option("--format", "-f", help="Formats or schemes (default set).")] = None,
    scaling: Annotated[list[str] | None, typer.Option(help="none and/or adaptive (default both).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = Path("runs"),
    limit: Annotated[int | None, typer.Option(help="Evaluate on this many test items (a quick look).")] = None,
    file: Annotated[Path | None, typer.Option(help="A YAML sweep file (keys as these options).")] = None,
    executor: Executor = "serial", workers: Workers = None,
    model: UserModel = None, evaluate: UserEval = None, calib: UserCalib = None,
    lm_model: LMModel = None, text: LMText = None, calib_text: LMCalibText = None, max_length: LMMaxLength = None,
    stride: LMStride = None,
) -> None:
    """Sweep formats x scaling on workloads; resumable; writes results.json/.csv and report.md/.html."""
    from dtypelab.experiments.sweep import SCALINGS, SweepFile
    from dtypelab.experiments.sweep import sweep as run_sweep
    from dtypelab.report import sweep_report

    with _one_line_errors():
        spec = SweepFile.load(file) if file else SweepFile()
        wls = _workloads(workload or spec.workloads, model, evaluate, calib,
                         _lm(lm_model, text, calib_text, max_length, stride))
        store = run_sweep(name or spec.name, wls, fmt or spec.formats, scaling or spec.scalings or list(SCALINGS),
                          runs_dir, limit if limit is not None else spec.limit, executor=executor, workers=workers)
        training = next((getattr(w, "plot_training_curves", None) for w in wls if w.name == "digits-vgg"), None)
        md, html = sweep_report.write(store, wls, training_plot=training)
    typer.echo(f"wrote {store.dir / 'results.json'}, {md} and {html}")


@app.command()
def quantize(
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="A registered workload.")] = None,
    config: Annotated[Path | None, typer.Option(help="A config file (YAML/JSON/TOML).")] = None,
    scheme: Annotated[str | None, typer.Option(help="Instead of --config: one scheme for every weight.")] = None,
    activations: Annotated[str | None, typer.Option(help="With --scheme: the activations' scheme.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON and CSV with this stem.")] = None,
    model: UserModel = None, evaluate: UserEval = None, calib: UserCalib = None,
    lm_model: LMModel = None, text: LMText = None, calib_text: LMCalibText = None, max_length: LMMaxLength = None,
    stride: LMStride = None,
) -> None:
    """Quantize a workload's model with a config, print the per-layer report and the metrics against FP32."""
    from dtypelab.experiments import evaluate as measure

    with _one_line_errors():
        cfg = _config(config, scheme, activations)
        wl = _workloads([workload] if workload else None, model, evaluate, calib,
                        _lm(lm_model, text, calib_text, max_length, stride))[0]
        user_without_calib = bool(model) and calib is None  # then only static activation scales need batches
        fp32 = measure(wl, None, energy=False).metrics
        outcome = measure(wl, cfg, calibration=None if user_without_calib else wl.calibration(), energy=False)
        if out:
            outcome.report.to_json(out.with_suffix(".json"))
            outcome.report.to_csv(out.with_suffix(".csv"))
    typer.echo(outcome.report.table())
    metrics = outcome.metrics
    typer.echo("\n" + "\n".join(f"{k}: {fp32[k]:.4f} (fp32) -> {metrics[k]:.4f}" for k in metrics))


def _progress(record: dict) -> None:
    typer.echo(f"generation {record['generation']}: best {record['best']:.5f} mean {record['mean']:.5f} "
               f"({record['evaluations']} evaluated)")


@app.command()
def search(
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="A registered workload.")] = None,
    space: Annotated[str, typer.Option(help="lp, posit, or comma-separated schemes.")] = "lp",
    budget: Annotated[float, typer.Option(help="Average stored bits per weight (hard limit).")] = 5.0,
    objective: Annotated[str, typer.Option(help="global+local, global or local.")] = "global+local",
    generations: Annotated[int, typer.Option()] = 12,
    population: Annotated[int, typer.Option()] = 24,
    seed: Annotated[int, typer.Option()] = 0,
    executor: Executor = "process", workers: Workers = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default runs/search-WORKLOAD-SPACE-BUDGET).")]
    = None,
    resume: Annotated[bool, typer.Option(help="Continue from the output directory's checkpoint.")] = False,
    ablation: Annotated[bool, typer.Option(help="Also run the GA under the other two objectives and compare.")]
    = False,
    batches: Annotated[int, typer.Option(help="Calibration batches each candidate is scored on.")] = 2,
    prior: Annotated[Path | None, typer.Option(help="A 'dtypelab sensitivity' run directory (or its "
                                               "sensitivity.json): seed the population from its ranking.")] = None,
    model: UserModel = None, evaluate: UserEval = None, calib: UserCalib = None,
    lm_model: LMModel = None, text: LMText = None, calib_text: LMCalibText = None, max_length: LMMaxLength = None,
    stride: LMStride = None,
) -> None:
    """LPQ-style genetic search of per-layer formats under a bit budget."""
    from dtypelab.experiments.search import GASettings
    from dtypelab.experiments.search import search as run_search
    from dtypelab.experiments.search.run import OBJECTIVES
    from dtypelab.experiments.search.space import SPACES

    with _one_line_errors():
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
        wl = _workloads([workload] if workload else None, model, evaluate, calib,
                        _lm(lm_model, text, calib_text, max_length, stride))[0]
        spaces = space if space in SPACES else split_specs(space)
        out = out or Path("runs") / f"search-{wl.name}-{space if isinstance(spaces, str) else 'list'}-{budget:g}"
        result = run_search(wl, spaces, budget, objective=OBJECTIVES[objective], ablation=ablation, batches=batches,
                            settings=GASettings(population=population, generations=generations, seed=seed),
                            executor=executor, workers=workers, out_dir=out, resume=resume, progress=_progress,
                            prior=prior)
    typer.echo(result.table())
    typer.echo(f"\nwrote {out}/best_config.yaml, results.json, pareto.csv, pareto.png")


@app.command()
def cost(
    workload: Annotated[str, typer.Option("--workload", "-w", help="A registered workload.")],
    config: Annotated[Path | None, typer.Option(help="A config file (YAML/JSON/TOML).")] = None,
    scheme: Annotated[str | None, typer.Option(help="Instead of --config: one scheme for weights and activations.")]
    = None,
    table: Annotated[Path | None, typer.Option(help="An energy table (YAML; default the lab's 45 nm table).")] = None,
    accounting: Annotated[str, typer.Option(help="full (every term) or lab (the lab's count).")] = "full",
) -> None:
    """Per-layer energy of one example and storage of a workload's model under a config, against FP32."""
    from dtypelab import workloads
    from dtypelab.experiments.evaluate import cost_breakdown

    with _one_line_errors():
        cfg = _config(config, scheme, scheme)
        c = cost_breakdown(workloads.get(workload), cfg, table=table, accounting=accounting)
    e, e32, s = c.energy, c.fp32_energy, c.storage
    ratio = f"{e32.total_pj / e.total_pj:.2f}x less" if e.total_pj else "no energy under the config"
    lines = [
        f"# {workload}: {config if config is not None else scheme}", "",
        f"## Energy of one example ({accounting} accounting, table {e.table_name})", "", e.table(), "",
        "## Storage", "", s.table(), "",
        "## Totals", "",
        f"energy: {e.total_pj / 1e6:.4f} µJ per example (FP32 {e32.total_pj / 1e6:.4f} µJ; {ratio})",
        f"size:   {s.total_mb:.4f} MB (FP32 {s.fp32_bits / 8e6:.4f} MB; {s.compression:.2f}x smaller)",
    ]
    typer.echo("\n".join(lines))


@app.command()
def sensitivity(
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="A registered workload.")] = None,
    scheme: Annotated[str, typer.Option(help="The weight scheme each layer is quantized with, alone.")] = "int4",
    activations: Annotated[str | None, typer.Option(help="Also quantize that layer's inputs with this scheme.")]
    = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate on this many test items (a quick look).")] = None,
    batches: Annotated[int, typer.Option(help="Calibration batches (activation scales, output KL, Fisher).")] = 2,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/sensitivity-WORKLOAD).")] = None,
    model: UserModel = None, evaluate: UserEval = None, calib: UserCalib = None,
    lm_model: LMModel = None, text: LMText = None, calib_text: LMCalibText = None, max_length: LMMaxLength = None,
    stride: LMStride = None,
) -> None:
    """Per-layer sensitivity: metric drop, output KL and a Fisher estimate with only that layer quantized."""
    from dtypelab.experiments.sensitivity import sensitivity as measure
    from dtypelab.experiments.sensitivity import write

    with _one_line_errors():
        wl = _workloads([workload] if workload else None, model, evaluate, calib,
                        _lm(lm_model, text, calib_text, max_length, stride))[0]
        if batches < 1:
            raise ValueError(f"--batches must be at least 1, got {batches}")
        result = measure(wl, scheme, activations, limit=limit, batches=batches)
        paths = write(result, out or Path("runs") / f"sensitivity-{wl.name}")
    typer.echo(result.table())
    typer.echo("\nwrote " + ", ".join(str(p) for p in paths))


@app.command()
def arith(
    workload: Annotated[str, typer.Option("--workload", "-w", help="A workload with BERT attention (minilm).")]
    = "minilm",
    limit: Annotated[int | None, typer.Option(help="Evaluate on this many test items (a quick look).")] = None,
    cell: Annotated[list[str] | None, typer.Option("--cell", help="Only these cells ('e4m3 | bf16'; default: "
                                                   "all).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/arith-WORKLOAD); the sweep report "
                                             "of a run directory shows the section.")] = None,
) -> None:
    """The accumulator study: recall@1, fidelity and energy per storage format x simulated accumulator."""
    from dtypelab import workloads
    from dtypelab.experiments import arith as study

    with _one_line_errors():
        if limit is not None and limit < 1:
            raise ValueError(f"--limit must be at least 1, got {limit}")
        cells = study.default_cells()
        unknown = sorted(set(cell or ()) - {c.label for c in cells})
        if unknown:
            raise ValueError(f"unknown cell(s) {unknown}; valid: {', '.join(c.label for c in cells)}")
        chosen = [c for c in cells if not cell or c.label in cell]
        rows = study.run(workloads.get(workload), chosen, limit=limit, progress=False)
        paths = study.write(rows, out or Path("runs") / f"arith-{workload}", workload, limit)
    typer.echo(study.section(rows, workload, limit))
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def train(
    workload: Annotated[str, typer.Option("--workload", "-w", help="A trainable workload (digits-vgg).")],
    config: Annotated[Path | None, typer.Option(help="A training config (YAML/JSON/TOML); default: FP32.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the config's, else the workload's).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the model, the batches and stochastic rounding.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/train-WORKLOAD-CONFIG).")] = None,
    fp32: Annotated[bool, typer.Option(help="Also train the FP32 baseline (same seed and schedule) beside it.")]
    = True,
) -> None:
    """Train a workload's model from scratch under a config; write curves (JSON, CSV, PNG) and a report."""
    from dtypelab._markdown import markdown_table
    from dtypelab.experiments.train import TrainConfig, fp32_config
    from dtypelab.experiments.train import train as run_train
    from dtypelab.report import training_report

    with _one_line_errors():
        overrides = {k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None}
        TrainConfig(**overrides)  # a bad --epochs or --seed is named here
        cfg = TrainConfig.coerce(config).model_copy(update=overrides)
        label = config.stem if config is not None else "fp32"
        out = out or Path("runs") / f"train-{workload}-{label}"
        runs = [run_train(workload, fp32_config(cfg), label="fp32")] if fp32 and config is not None else []
        runs.append(run_train(workload, cfg, label=label))
        paths = training_report.write(runs, out, f"{workload} from scratch ({label})")
    header, rows = training_report.table(runs)
    typer.echo(markdown_table(header, rows))
    typer.echo("\nwrote " + ", ".join(str(p) for p in paths))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
