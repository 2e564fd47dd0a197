"""CLI: demo-data (synthetic phantom datasets). Heavy imports stay inside the command bodies."""
from __future__ import annotations

from pathlib import Path

import typer

from swinseg.cli._common import cli_errors, err, out


@cli_errors
def demo_data(
    out_dir: Path = typer.Argument(..., help="Folder to write the dataset to (nnU-Net layout)."),
    cases: int = typer.Option(10, "--cases", "-n", min=1, help="Number of phantom cases."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed; case i is drawn from (seed, i)."),
    shape: tuple[int, int, int] = typer.Option((48, 160, 160), "--shape", help="Volume size Z Y X in voxels."),
    spacing: tuple[float, float, float] = typer.Option(
        (5.0, 2.2, 2.2), "--spacing", help="Voxel spacing Z Y X in mm (written to the NIfTI headers)."
    ),
) -> None:
    """Generate synthetic abdominal CT phantoms (liver, spleen, kidneys, aorta) in nnU-Net layout.

    imagesTr/phantom_XXX_0000.nii.gz, labelsTr/phantom_XXX.nii.gz and dataset.json; deterministic per seed.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from swinseg.phantom import write_phantom_dataset

    with Progress(
        TextColumn("[bold]phantoms"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=err, transient=True,
    ) as progress:
        task = progress.add_task("", total=cases)
        folder = write_phantom_dataset(
            out_dir, cases, seed, shape=shape, spacing=spacing,
            progress=lambda name: progress.update(task, advance=1, description=name),
        )
    out.print(
        f"wrote {cases} phantom cases ({shape[0]}x{shape[1]}x{shape[2]} voxels, "
        f"{spacing[0]:g}x{spacing[1]:g}x{spacing[2]:g} mm) to {folder}/ (imagesTr, labelsTr, dataset.json)",
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("demo-data")(demo_data)
