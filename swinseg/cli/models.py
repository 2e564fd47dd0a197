"""CLI: `swinseg models add|list|show|remove|default|export`, the model store (swinseg.store)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from swinseg.cli._common import cli_errors, err, out

models_app = typer.Typer(
    help="Models kept by name, ready to predict: `swinseg models add RUN_DIR --name liver --default`, then "
    "`swinseg predict scan.nii.gz -o mask.nii.gz`. The store is $SWINSEG_HOME (default: the user's data folder).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.add_typer(models_app, name="models")


@models_app.command("add")
@cli_errors
def add(
    source: Path = typer.Argument(
        ..., help="A swinseg checkpoint, an exported .onnx, a reference .pth (with --model), a training run folder, "
        "a cross-validation run folder (its folds, an ensemble) or a folder of `swinseg models export`.",
        show_default=False,
    ),
    name: str = typer.Option(..., "--name", "-n", help="The name to predict with: swinseg predict -m NAME.",
                             show_default=False),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model card for a reference .pth."),
    default: Optional[bool] = typer.Option(
        None, "--default/--no-default", show_default=False,
        help="Make it the default model, used by predict without -m. (default: when there is no default yet)",
    ),
    replace: bool = typer.Option(False, "--replace", help="Replace a stored model of that name."),
    prepare: bool = typer.Option(True, "--prepare/--no-prepare",
                                 help="Export to ONNX and compile for OpenVINO now, so that predict starts at once."),
) -> None:
    """Copy a model into the store (sha256 of every file, card, training summary, date)."""
    from swinseg import store

    entry = store.add(source, name, card=model, default=default, replace=replace, prepare=prepare,
                      log=lambda line: err.print(escape(line), highlight=False, soft_wrap=True))
    is_default = store.default_name() == entry.name
    out.print(f"stored {entry.name!r}{' (default)' if is_default else ''}: {_classes(entry)}, {len(entry.members)} "
              f"model(s), {entry.size / 1e6:.1f} MB in {entry.folder}", highlight=False, soft_wrap=True, markup=False)
    command = "swinseg predict scan.nii.gz -o mask.nii.gz" + ("" if is_default else f" -m {entry.name}")
    out.print(f"predict with: {command}", highlight=False, soft_wrap=True, markup=False)


@models_app.command("list")
@cli_errors
def list_models(as_json: bool = typer.Option(False, "--json", help="A JSON list instead of the table.")) -> None:
    """Stored models: name, classes, spacing, size, validation Dice; * marks the default."""
    from swinseg import store

    default = store.default_name()
    rows = [_row(entry, default) for entry in store.entries()]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        err.print(f"no models stored in {store.models_folder()}; add one with "
                  "`swinseg models add CHECKPOINT_OR_RUN_DIR --name NAME --default`", highlight=False, soft_wrap=True)
        return
    table = Table("", "name", "classes", "spacing (mm)", "size (MB)", "validation Dice", "added")
    for row in rows:
        dice = "" if row["validation_dice"] is None else f"{row['validation_dice']:.3f}"
        table.add_row("*" if row["default"] else "", escape(row["name"]), escape(", ".join(row["classes"][1:])),
                      row["spacing"], f"{row['size_mb']:.1f}", dice, row["added"][:10])
    out.print(table)


@models_app.command("show")
@cli_errors
def show(name: str = typer.Argument(..., help="A stored model's name.", show_default=False)) -> None:
    """A stored model's card, files, training summary and where it came from."""
    from swinseg import store

    entry = store.get(name)
    manifest = dict(entry.manifest)
    manifest["default"] = store.default_name() == name
    manifest["folder"] = str(entry.folder)
    typer.echo(json.dumps(manifest, indent=1))


@models_app.command("remove")
@cli_errors
def remove(name: str = typer.Argument(..., help="A stored model's name.", show_default=False)) -> None:
    """Delete a stored model (and clear it as the default)."""
    from swinseg import store

    store.remove(name)
    out.print(f"removed {name!r}", highlight=False, markup=False)


@models_app.command("default")
@cli_errors
def default(name: str = typer.Argument(..., help="A stored model's name.", show_default=False)) -> None:
    """Make a stored model the default: `swinseg predict scan.nii.gz -o mask.nii.gz` uses it."""
    from swinseg import store

    store.set_default(name)
    out.print(f"default model: {name!r}", highlight=False, markup=False)


@models_app.command("export")
@cli_errors
def export(
    name: str = typer.Argument(..., help="A stored model's name.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="A new folder; `swinseg models add FOLDER --name NAME` "
                                "takes it on another machine.", show_default=False),
) -> None:
    """Copy a stored model (files checked, manifest) to a folder another machine can add."""
    from swinseg import store

    folder = store.export_entry(name, output)
    out.print(f"exported {name!r} to {folder}", highlight=False, markup=False, soft_wrap=True)


def _classes(entry: Any) -> str:
    return f"{len(entry.manifest['card']['classes'])} classes"


def _row(entry: Any, default: str | None) -> dict[str, Any]:
    card = entry.card
    spacing = card.preprocessing.spacing
    training = entry.manifest.get("training") or {}
    return {"name": entry.name, "default": entry.name == default, "classes": list(card.classes),
            "spacing": "x".join(f"{s:g}" for s in spacing) if spacing else "whole slices",
            "size_mb": entry.size / 1e6, "validation_dice": training.get("validation_dice"),
            "models": len(entry.members), "added": entry.manifest.get("added", "")}
