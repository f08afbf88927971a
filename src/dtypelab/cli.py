"""The ``dtypelab`` command. Thin: every command is a call into the library.

Example:
    $ dtypelab formats
    $ dtypelab formats plot "posit(8,1)" "lp(8,2,2,0)" e4m3 -o accuracy.png
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


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()
