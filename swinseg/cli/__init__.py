"""The `swinseg` command line. Command modules import only typer/rich at module level, so that
`swinseg --help` never imports torch; each registers its commands on the app."""
from __future__ import annotations

import atexit
import os
import sys

import typer

from swinseg import __version__
from swinseg.cli import (
    _common,
    demo,
    evaluate,
    export,
    models,
    overlay,
    plan,
    predict,
    preprocess,
    report,
    serve,
    to_dicom,
    train,
    weights,
)

app = typer.Typer(
    name="swinseg",
    help="Medical image segmentation with Swin-Unet: predict, train, finetune, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"swinseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    """Medical image segmentation with Swin-Unet."""
    _common.state.debug = debug


for _module in (predict, models, evaluate, report, train, plan, preprocess, weights, export, overlay, demo, to_dicom,
                serve):
    _module.register(app)


def main() -> None:
    """Console-script entry point. When the command is done, the process leaves without the interpreter's
    teardown, which after `import torch` took 0.4-0.6 s of every call: exit handlers (atexit: temporary folders,
    child processes, logging) run and the output is flushed first; files are already closed and renamed. Under a
    profiler, debugger or coverage tool the process ends as usual."""
    if sys.getprofile() is not None or sys.gettrace() is not None:  # a profiler, debugger or coverage: they
        app()  # write their results after the program, so it ends as usual
        return
    try:
        app()
        code: object = 0
    except SystemExit as done:
        code = done.code
    if isinstance(code, str):  # sys.exit("message")
        print(code, file=sys.stderr)
    atexit._run_exitfuncs()  # what normal exit runs first; the rest of the teardown frees memory only
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
