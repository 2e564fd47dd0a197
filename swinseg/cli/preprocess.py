"""CLI: `swinseg preprocess` converts an nnU-Net/MSD dataset into the Synapse layout (heavy imports stay
inside the command body)."""
from __future__ import annotations

from pathlib import Path

import typer

from swinseg.cli._common import cli_errors, err, fail, out
from swinseg.defaults import SEED


@cli_errors
def preprocess(
    in_dir: Path = typer.Argument(..., help="nnU-Net/MSD dataset folder (imagesTr/, labelsTr/, dataset.json)."),
    out_dir: Path = typer.Option(..., "--output", "--out", "-o", help="Output folder in the Synapse layout."),
    model: str = typer.Option("swin_unet_tiny", "--model", "-m",
                              help="Model card (name or YAML) giving the CT window/orientation; classes "
                                   "come from dataset.json when it names them."),
    test_fraction: float | None = typer.Option(None, "--test-fraction",
                                               help="Share of cases held out as test volumes (default: 0.2)."),
    test_cases: str | None = typer.Option(None, "--test-cases",
                                          help="Comma-separated case names to hold out (instead of a random split)."),
    seed: int = typer.Option(SEED, "--seed", help="Seed of the random train/test split."),
) -> None:
    """Convert a NIfTI dataset into the Synapse layout: train_npz/ slices, test_vol_h5/ volumes, lists.

    Interrupted runs resume: rerun the same command and finished cases are skipped.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from swinseg.config import load_card
    from swinseg.labels import split_list
    from swinseg.training.convert import preprocess_dataset

    held_out = split_list(test_cases) if test_cases else None
    if test_cases is not None and not held_out:
        fail("--test-cases: give case names separated by commas")
    if held_out is not None and test_fraction is not None:
        fail("--test-fraction and --test-cases exclude each other: give one")
    card = load_card(model)
    columns = (TextColumn("[bold]preprocess[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("", total=None)

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        fraction = 0.2 if test_fraction is None else test_fraction
        report = preprocess_dataset(in_dir, out_dir, card, test_fraction=fraction, test_cases=held_out, seed=seed,
                                    progress=advance)
    if report.extra_channels:
        err.print(f"[yellow]warning:[/yellow] only channel _0000 used; ignored extra channels of "
                  f"{len(report.extra_channels)} cases", highlight=False)
    resumed = f" ({len(report.skipped)} cases kept from an earlier run)" if report.skipped else ""
    out.print(f"{report.out_dir}: {len(report.train_cases)} training cases ({report.train_slices} slices), "
              f"{len(report.test_cases)} test volumes{resumed}", highlight=False, soft_wrap=True)
    if report.test_cases:
        out.print(f"test cases: {', '.join(report.test_cases)}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("preprocess")(preprocess)
