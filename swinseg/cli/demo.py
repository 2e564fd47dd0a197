"""CLI: demo-data (synthetic phantom datasets) and demo (the whole pipeline on phantoms, offline).

Heavy imports stay inside the command bodies."""
from __future__ import annotations

from pathlib import Path

import json
import shlex
import time

import click
import typer

from swinseg.cli._common import cli_errors, err, out
from swinseg.errors import SwinsegError

DEMO_MODEL = "swin_unet_demo"


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


def _run_step(app: click.Command, args: list[str]) -> None:
    """Run one swinseg command in this process, after printing it so that users can replay it."""
    out.print(f"\n[bold cyan]$ swinseg {shlex.join(args)}[/bold cyan]", highlight=False, soft_wrap=True)
    code = app.main(args=args, prog_name="swinseg", standalone_mode=False)
    if code:  # the command has printed its one-line error
        raise typer.Exit(code)


@cli_errors
def demo(
    ctx: typer.Context,
    out_dir: Path = typer.Option(Path("demo_output"), "--output", "--out", "-o", help="Folder for data, model and results."),
    train_cases: int = typer.Option(16, "--train-cases", min=2, help="Phantom cases to train on."),
    test_cases: int = typer.Option(4, "--test-cases", min=1, help="Held-out phantom cases to predict."),
    epochs: int = typer.Option(15, "--epochs", min=1, help="Training epochs."),
    shape: tuple[int, int, int] = typer.Option((48, 160, 160), "--shape", help="Phantom size Z Y X in voxels."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Run the whole pipeline on synthetic CT phantoms, offline: data, training, prediction, evaluation, pictures.

    Each step is the swinseg command printed before it, so every result can be reproduced by hand.
    """
    started = time.perf_counter()
    app = ctx.find_root().command  # the click group: steps run through the real commands
    data, run, predictions, report = (out_dir / "data", out_dir / "run", out_dir / "predictions", out_dir / "report")
    overlays = out_dir / "overlays"
    if (run / "last.pt").exists() or (run / "final.safetensors").exists():
        raise SwinsegError(f"{out_dir}: holds an earlier demo; remove it or pass -o NEW_FOLDER (make demo DEMO_OUT=NEW_FOLDER)")
    steps = [
        ["demo-data", str(data / "train"), "--cases", str(train_cases), "--seed", "0", "--shape", *map(str, shape)],
        ["demo-data", str(data / "heldout"), "--cases", str(test_cases), "--seed", "1", "--shape", *map(str, shape)],
        ["train", "--data", str(data / "train"), "--model", DEMO_MODEL, "-o", str(run), "--epochs", str(epochs),
         "--batch-size", "16", "--val-every", "3", "--device", device],
        ["predict", str(data / "heldout" / "imagesTr") + "/", "-o", str(predictions) + "/", "--checkpoint",
         str(run / "best.safetensors"), "--keep-largest", "--device", device, "--overwrite"],
        ["evaluate", str(predictions), str(data / "heldout" / "labelsTr"), "--dataset-json",
         str(data / "heldout" / "dataset.json"), "-o", str(report)],
    ]
    for args in steps:
        _run_step(app, args)
    for index in range(test_cases):
        case = f"phantom_{index:03d}"
        _run_step(app, ["overlay", str(data / "heldout" / "imagesTr" / f"{case}_0000.nii.gz"),
                        str(predictions / f"{case}.nii.gz"), "--reference",
                        str(data / "heldout" / "labelsTr" / f"{case}.nii.gz"), "--model", DEMO_MODEL,
                        "-o", str(overlays / f"{case}.png")])
    summary = json.loads((report / "summary.json").read_text(encoding="utf-8"))
    dice = summary["mean_over_classes"]["dice"]
    minutes = (time.perf_counter() - started) / 60
    out.print(
        f"\n[bold green]demo finished in {minutes:.1f} min: mean Dice on {test_cases} held-out phantoms "
        f"= {dice:.3f}[/bold green]\n"
        f"  data         {data}/ (train, heldout: nnU-Net layout)\n"
        f"  model        {run / 'best.safetensors'} (curves: {run / 'curves.png'})\n"
        f"  masks        {predictions}/\n"
        f"  report       {report}/ (summary.md, per_case.csv, dice_hd95.png)\n"
        f"  overlays     {overlays}/ (prediction | reference)",
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("demo-data")(demo_data)
    app.command("demo")(demo)
