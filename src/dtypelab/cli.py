"""The ``dtypelab`` command. Thin: every command is a call into the library.

Example:
    $ dtypelab formats
    $ dtypelab formats plot "posit(8,1)" "lp(8,2,2,0)" e4m3 -o accuracy.png
    $ dtypelab sweep                                  # the default sweep -> runs/default/report.html
    $ dtypelab quantize --workload digits-vgg --config config.yaml
    $ dtypelab search --workload digits-vgg --space lp --budget 5.0
    $ dtypelab cost --workload digits-vgg --config config.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Exact low-precision formats and quantization.")
formats_app = typer.Typer(help="The number formats: a table, or their decimal-accuracy plot.")
app.add_typer(formats_app, name="formats")

DEFAULT_FORMATS = (
    "posit(8,0)", "posit(8,1)", "posit(6,0)", "posit(6,1)", "posit(16,1)", "posit(32,2)", "lp(8,2,2,0)",
    "lp(6,1,2,0)", "e4m3", "e5m2", "e3m2", "e2m3", "e2m1", "bf16", "fp16", "int8", "int4", "uint8",
    "dt8", "dt6", "dt4", "nf4",
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


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

    try:
        typer.echo(format_table(spec or DEFAULT_FORMATS))
    except ValueError as err:
        _fail(str(err))


@formats_app.command("plot")
def formats_plot(
    specs: Annotated[list[str], typer.Argument(help="Format specs, e.g. 'posit(8,1)' e4m3")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write")],
) -> None:
    """Draw each format's decimal accuracy against log2|x| (the figures of the posit and LP papers)."""
    from dtypelab.report.plots import accuracy_plot

    try:
        accuracy_plot(specs, output)
    except ValueError as err:
        _fail(str(err))
    typer.echo(f"wrote {output}")


UserModel = Annotated[str | None, typer.Option("--model", help="Your model: pkg.module:factory (no arguments).")]
UserEval = Annotated[str | None, typer.Option("--eval", help="Your metric: pkg.module:evaluate(model) -> dict.")]
UserCalib = Annotated[str | None, typer.Option("--calib", help="Calibration batches: pkg.module:batches().")]


def _workloads(names: list[str] | None, model: str | None, evaluate: str | None, calib: str | None) -> list:
    from dtypelab import workloads

    if model or evaluate:
        if not (model and evaluate):
            _fail("a user workload needs both --model and --eval")
        return [workloads.load_user(model=model, evaluate=evaluate, calib=calib)]
    return [workloads.get(n) for n in (names or ["digits-vgg", "minilm"])]


@app.command()
def sweep(
    name: Annotated[str, typer.Option(help="Run name: results go to RUNS_DIR/NAME.")] = "default",
    workload: Annotated[list[str] | None, typer.Option("--workload", "-w", help="Workloads (default: all).")] = None,
    fmt: Annotated[list[str] | None, typer.Option("--format", "-f", help="Formats or schemes (default set).")] = None,
    scaling: Annotated[list[str] | None, typer.Option(help="none and/or adaptive (default both).")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where runs are written.")] = Path("runs"),
    limit: Annotated[int | None, typer.Option(help="Evaluate on this many test items (a quick look).")] = None,
    file: Annotated[Path | None, typer.Option(help="A YAML sweep file (keys as these options).")] = None,
    model: UserModel = None, evaluate: UserEval = None, calib: UserCalib = None,
) -> None:
    """Sweep formats x scaling on workloads; resumable; writes results.json/.csv and report.md/.html."""
    from dtypelab.experiments.sweep import SCALINGS, SweepFile
    from dtypelab.experiments.sweep import sweep as run_sweep
    from dtypelab.report import sweep_report

    try:
        spec = SweepFile.load(file) if file else SweepFile()
        wls = _workloads(workload or spec.workloads, model, evaluate, calib)
        store = run_sweep(name if file is None else spec.name, wls, fmt or spec.formats,
                          scaling or spec.scalings or list(SCALINGS), runs_dir,
                          limit if limit is not None else spec.limit)
        training = next((getattr(w, "plot_training_curves", None) for w in wls if w.name == "digits-vgg"), None)
        md, html = sweep_report.write(store, wls, training_plot=training)
    except ValueError as err:
        _fail(str(err))
    typer.echo(f"wrote {store.dir / 'results.json'}, {md} and {html}")


@app.command()
def quantize(
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="A registered workload.")] = None,
    config: Annotated[str, typer.Option(help="A config file (YAML/JSON/TOML) or one scheme for the weights.")] = "",
    activations: Annotated[str | None, typer.Option(help="With a scheme as --config: the activations' scheme.")] = None,
    out: Annotated[Path | None, typer.Option(help="Also write the report as JSON and CSV with this stem.")] = None,
    model: UserModel = None, evaluate: UserEval = None, calib: UserCalib = None,
) -> None:
    """Quantize a workload's model with a config, print the per-layer report and the metrics against FP32."""
    import dtypelab as dl

    try:
        wl = _workloads([workload] if workload else None, model, evaluate, calib)[0]
        cfg: object = config if Path(config).exists() else {"weights": config, "activations": activations}
        m = wl.model()
        fp32 = wl.evaluate(m)
        report = dl.quantize_model(m, cfg, calibration=wl.calibration())
        metrics = wl.evaluate(m)
    except ValueError as err:
        _fail(str(err))
    typer.echo(report.table())
    if out:
        report.to_json(out.with_suffix(".json"))
        report.to_csv(out.with_suffix(".csv"))
    typer.echo("\n" + "\n".join(f"{k}: {fp32[k]:.4f} (fp32) -> {metrics[k]:.4f}" for k in metrics))


@app.command()
def search(
    workload: Annotated[str | None, typer.Option("--workload", "-w", help="A registered workload.")] = None,
    space: Annotated[str, typer.Option(help="lp, posit, or comma-separated schemes.")] = "lp",
    budget: Annotated[float, typer.Option(help="Average stored bits per weight (hard limit).")] = 5.0,
    objective: Annotated[str, typer.Option(help="global+local, global or local.")] = "global+local",
    generations: Annotated[int, typer.Option()] = 12,
    population: Annotated[int, typer.Option()] = 24,
    seed: Annotated[int, typer.Option()] = 0,
    executor: Annotated[str, typer.Option(help="process, serial or ray.")] = "process",
    workers: Annotated[int | None, typer.Option(help="Processes for --executor process.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default runs/search-WORKLOAD-SPACE-BUDGET).")]
    = None,
    resume: Annotated[bool, typer.Option(help="Continue from the output directory's checkpoint.")] = False,
    ablation: Annotated[bool, typer.Option(help="Also run the GA under the other two objectives and compare.")]
    = False,
    batches: Annotated[int, typer.Option(help="Calibration batches each candidate is scored on.")] = 2,
    model: UserModel = None, evaluate: UserEval = None, calib: UserCalib = None,
) -> None:
    """LPQ-style genetic search of per-layer formats under a bit budget."""
    from dtypelab.experiments.search import GASettings
    from dtypelab.experiments.search import search as run_search
    from dtypelab.experiments.search.run import OBJECTIVES

    try:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
        wl = _workloads([workload] if workload else None, model, evaluate, calib)[0]
        spaces = space if space in ("lp", "posit") else [s.strip() for s in space.split(",") if s.strip()]
        out = out or Path("runs") / f"search-{wl.name}-{space if isinstance(spaces, str) else 'list'}-{budget:g}"
        result = run_search(wl, spaces, budget, objective=OBJECTIVES[objective], ablation=ablation, batches=batches,
                            settings=GASettings(population=population, generations=generations, seed=seed),
                            executor=executor, workers=workers, out_dir=out, resume=resume,
                            progress=lambda r: typer.echo(f"generation {r['generation']}: best {r['best']:.5f} "
                                                          f"mean {r['mean']:.5f} ({r['evaluations']} evaluated)"))
    except ValueError as err:
        _fail(str(err))
    typer.echo(result.table())
    typer.echo(f"\nwrote {out}/best_config.yaml, results.json, pareto.csv, pareto.png")


@app.command()
def cost(
    workload: Annotated[str, typer.Option("--workload", "-w", help="A registered workload.")],
    config: Annotated[str, typer.Option(help="A config file or one scheme for weights and activations.")],
) -> None:
    """Per-layer storage and energy of a workload's model under a config."""
    from dtypelab.cost import cost_command

    try:
        cfg: object = config if Path(config).exists() else {"weights": config, "activations": config}
        typer.echo(cost_command(workload, cfg))
    except ValueError as err:
        _fail(str(err))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
