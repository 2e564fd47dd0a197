"""CLI: demo-data (synthetic phantom datasets) and demo (the whole pipeline on phantoms, offline).

Heavy imports stay inside the command bodies."""
from __future__ import annotations

import json
import shlex
import time
from pathlib import Path

import click
import typer

from swinseg.cli._common import cli_errors, err, out
from swinseg.errors import SwinsegError
from swinseg.rundir import BEST_FILE, FINAL_FILE, STATE_FILE

DEMO_MODEL = "swin_unet_demo"
STORED_NAME = "demo"  # the demo's model in the store (swinseg models)


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


def _demo_spacing(shape: tuple[int, int, int]) -> tuple[float, float, float]:
    """The voxel spacing that gives `shape` the default phantom field of view (240 x 352 x 352 mm)."""
    from swinseg.phantom import DEFAULT_SHAPE, DEFAULT_SPACING

    return tuple(round(n0 * s0 / n, 4) for n0, s0, n in zip(DEFAULT_SHAPE, DEFAULT_SPACING, shape))  # type: ignore


def _geometry_args(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[str]:
    return ["--shape", *map(str, shape), "--spacing", *(f"{s:g}" for s in spacing)]


@cli_errors
def demo(
    ctx: typer.Context,
    out_dir: Path = typer.Option(Path("demo_output"), "--output", "--out", "-o",
                                 help="Folder for data, model and results."),
    train_cases: int = typer.Option(16, "--train-cases", min=2, help="Phantom cases to train on."),
    test_cases: int = typer.Option(4, "--test-cases", min=1, help="Held-out phantom cases to predict."),
    epochs: int = typer.Option(25, "--epochs", min=1, help="Training epochs."),
    shape: tuple[int, int, int] = typer.Option(
        (48, 128, 128), "--shape",
        help="Phantom size Z Y X in voxels (the field of view stays 240x352x352 mm; 128 in-plane = 2.75 mm pixels).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Run the whole pipeline on synthetic CT phantoms, offline: data, training, prediction, evaluation, pictures.

    The held-out phantoms are also predicted with a 1.5x field of view (air around the body) and at half the
    pixel spacing: the model resamples every scan to its training spacing, so all three should score alike.
    Each step is the swinseg command printed before it, so every result can be reproduced by hand.
    """
    started = time.perf_counter()
    app = ctx.find_root().command  # the click group: steps run through the real commands
    data, run, report = out_dir / "data", out_dir / "run", out_dir / "report"
    overlays = out_dir / "overlays"
    if (run / STATE_FILE).exists() or (run / FINAL_FILE).exists():
        raise SwinsegError(f"{out_dir}: holds an earlier demo; remove it or pass -o NEW_FOLDER "
                           "(make demo DEMO_OUT=NEW_FOLDER)")
    spacing = _demo_spacing(shape)
    nz, ny, nx = shape
    variants = {  # held-out set name -> (shape, spacing, what it shows)
        "heldout": (shape, spacing, "as generated"),
        "heldout_fov1.5": ((nz, ny * 3 // 2, nx * 3 // 2), spacing, "1.5x field of view"),
        "heldout_halfspacing": ((nz, ny * 2, nx * 2), (spacing[0], spacing[1] / 2, spacing[2] / 2),
                                "half the spacing"),
    }
    steps = [["demo-data", str(data / "train"), "--cases", str(train_cases), "--seed", "0",
              *_geometry_args(shape, spacing)]]
    steps += [["demo-data", str(data / name), "--cases", str(test_cases), "--seed", "1", *_geometry_args(*geometry[:2])]
              for name, geometry in variants.items()]
    steps.append(["train", "--data", str(data / "train"), "--model", DEMO_MODEL, "-o", str(run), "--epochs",
                  str(epochs), "--batch-size", "16", "--val-every", "3", "--device", device])
    steps.append(["models", "add", str(run / BEST_FILE), "--name", STORED_NAME, "--replace"])
    for name in variants:
        predictions = out_dir / "predictions" / name
        steps.append(["predict", str(data / name / "imagesTr") + "/", "-o", str(predictions) + "/", "-m",
                      STORED_NAME, "--keep-largest", "--device", device, "--overwrite"])
        steps.append(["evaluate", str(predictions), str(data / name / "labelsTr"), "--dataset-json",
                      str(data / name / "dataset.json"), "-o", str(report / name)])
    for args in steps:
        _run_step(app, args)
    for name in variants:
        for index in range(test_cases):
            case = f"phantom_{index:03d}"
            _run_step(app, ["overlay", str(data / name / "imagesTr" / f"{case}_0000.nii.gz"),
                            str(out_dir / "predictions" / name / f"{case}.nii.gz"), "--reference",
                            str(data / name / "labelsTr" / f"{case}.nii.gz"), "--model", DEMO_MODEL,
                            "-o", str(overlays / name / f"{case}.png")])
    dice = {name: json.loads((report / name / "summary.json").read_text(encoding="utf-8"))["mean_over_classes"]["dice"]
            for name in variants}
    minutes = (time.perf_counter() - started) / 60
    from swinseg.store import default_name

    scan = data / "heldout" / "imagesTr" / "phantom_000_0000.nii.gz"
    flag = "" if default_name() == STORED_NAME else f" -m {STORED_NAME}"
    scores = "\n".join(f"  {variants[name][2]:<20} {dice[name]:.3f}   ({report / name}/)" for name in variants)
    out.print(
        f"\n[bold green]demo finished in {minutes:.1f} min: mean Dice on {test_cases} held-out phantoms "
        f"= {dice['heldout']:.3f}[/bold green]\n"
        f"the same phantoms (the model resamples each scan to its training spacing):\n{scores}\n"
        f"  data         {data}/ (train, heldout*: nnU-Net layout)\n"
        f"  model        {run / 'best.safetensors'} (curves: {run / 'curves.png'})\n"
        f"  masks        {out_dir / 'predictions'}/\n"
        f"  report       {report}/ (summary.md, per_case.csv, dice_hd95.png per held-out set)\n"
        f"  overlays     {overlays}/ (prediction | reference)\n"
        f"  stored model {STORED_NAME!r} (swinseg models show {STORED_NAME}); predict with it:\n"
        f"swinseg predict {shlex.quote(str(scan))} -o mask.nii.gz{flag}",
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("demo-data")(demo_data)
    app.command("demo")(demo)
