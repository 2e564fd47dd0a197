"""CLI: `swinseg plan` fingerprints a dataset and prints what `swinseg train` would decide for it (heavy imports
stay inside the command body)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text

from swinseg.cli._common import cli_errors, err, out

if TYPE_CHECKING:
    from swinseg.fingerprint import Fingerprint
    from swinseg.plan import Plan
    from swinseg.training.data import TrainingCases


@cli_errors
def plan_command(
    data: Path = typer.Argument(..., help="Dataset folder: nnU-Net/MSD (imagesTr/, labelsTr/, dataset.json) or "
                                          "the Synapse layout (train_npz/, test_vol_h5/)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model card (name or YAML). (default: train's, "
                                                                  "swin_unet_tiny)"),
    spacing: str | None = typer.Option(None, "--spacing", help="Target in-plane spacing: auto, none or SY,SX mm, "
                                                               "as for train."),
    plane: str | None = typer.Option(None, "--plane", help="Slicing plane: axial, coronal or sagittal."),
    config_file: Path | None = typer.Option(None, "--config", help="A training YAML (train --config): plan what "
                                                                   "it would train; flags override it."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda[:N]: the batch size depends on "
                                                             "it. (default: auto)"),
    as_json: bool = typer.Option(False, "--json", help="Print the plan, fingerprint included, as JSON."),
) -> None:
    """Fingerprint a dataset and print the training plan: every decision, why, and the flag that made it.

    The cases are split as `swinseg train` splits them (the training cases are planned from), so the plan is
    the one training with the same options writes to RUN_DIR/plan.json.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from swinseg import plan as planner
    from swinseg.config import load_card
    from swinseg.device import resolve_device
    from swinseg.training.data import read_training_cases
    from swinseg.training.datasets import is_synapse
    from swinseg.training.options import resolve_config
    from swinseg.training.setup import with_context

    flags = {"data": str(data), "model": model, "spacing": spacing, "plane": plane, "device": device}
    config = resolve_config(config_file, flags)
    card = with_context(config, None, load_card(config.model or "swin_unet_tiny"))
    prep = planner.layout_preprocessing(config, card, is_synapse(data))
    with Progress(TextColumn("[bold]reading[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("", total=None)

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        cases = read_training_cases(data, prep, seed=config.seed, validation_fraction=config.val_fraction,
                                    validation_cases=config.val_cases, progress=advance)
    result = planner.plan_training(cases, card, config, resolve_device(config.device))
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=1))
        return
    out.print(Text(_heading(cases)), soft_wrap=True)
    if result.fingerprint is not None:
        out.print(_fingerprint_table(result.fingerprint))
        out.print(_classes_table(result.fingerprint))
    out.print(_plan_table(result))


def _heading(cases: TrainingCases) -> str:
    held = f"{len(cases.validation_cases)} held out for validation, as swinseg train holds them out"
    if cases.layout == "synapse":
        return (f"{cases.root}: Synapse layout, {len(cases.train_cases)} training cases "
                f"({cases.training_slices} slices; {held}). Its files carry no spacing and hold intensities "
                "normalised already: nothing to fingerprint; this is what can be decided.")
    return f"{cases.root}: nnU-Net layout, {len(cases.train_cases)} training cases ({held})"


def _fingerprint_table(found: Fingerprint) -> Table:
    summary = found.summary()
    table = Table("fingerprint", "median", "min", "max", title="training cases", title_justify="left")
    table.add_row("spacing mm (slices, rows, columns)", *(_triple(summary[f"{key}_spacing"])
                                                          for key in ("median", "min", "max")))
    table.add_row("size voxels (slices, rows, columns)", *(_triple(summary[f"{key}_shape"])
                                                           for key in ("median", "min", "max")))
    channel = found.channels[0]
    name = channel["name"] or "no name in dataset.json"
    foreground, scan = channel["foreground"], channel["scan"]
    if foreground is not None:
        table.add_row(Text(f"channel 0 ({name}) foreground, mean {foreground['mean']:.4g} sd {foreground['sd']:.4g}"),
                      *_percentile_cells(foreground))
    table.add_row(Text(f"channel 0 ({name}) whole scan"), *_percentile_cells(scan))
    return table


def _percentile_cells(values: dict[str, float]) -> tuple[str, str, str]:
    """The median, 0.5 and 99.5 percentiles of an intensity statistics entry."""
    return f"{values['p50']:.4g}", f"{values['p0.5']:.4g} (0.5%)", f"{values['p99.5']:.4g} (99.5%)"


def _classes_table(found: Fingerprint) -> Table:
    table = Table("label", "class", "share of the foreground", "cases", "objects", "median object mm³",
                  title="classes", title_justify="left")
    for entry in found.classes:
        median = entry["median_object_mm3"]
        table.add_row(str(entry["label"]), Text(entry["name"]), f"{entry['share']:.1%}", str(entry["cases"]),
                      str(entry["objects"]), "-" if median is None else f"{median:,.0f}")
    return table


def _plan_table(result: Plan) -> Table:
    table = Table("decision", "value", "reason", "set by", title="plan", title_justify="left")
    for name, decision in result.decisions().items():
        table.add_row(name.replace("_", " "), Text(decision.text), Text(decision.reason), decision.flag or "rule")
    return table


def _triple(values: Any) -> str:
    return " x ".join(f"{v:g}" for v in values)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("plan")(plan_command)
