"""CLI: weights info / convert (heavy imports stay inside the command bodies)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swinseg.cli._common import cli_errors, fail, out

weights_app = typer.Typer(
    name="weights",
    help="Inspect weight files and convert them to swinseg's checkpoint format.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@cli_errors
def info(file: Path = typer.Argument(..., help="Weight file (.safetensors, .pth, .pt, .bin).")) -> None:
    """Show what a weight file is, the configuration it implies and its parameter count.

    Recognises swinseg checkpoints, reference Swin-Unet checkpoints (keys bare, swin_unet. or
    module.swin_unet.) and Swin Transformer classifiers (official or timm layout).
    """
    from rich.table import Table

    from swinseg.weights import describe

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in describe(file).items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, int) and key in ("parameters", "tensors"):
            value = f"{value:,}"
        table.add_row(key, str(value))
    out.print(table)


def _class_names(values: list[str]) -> list[str]:
    """`--classes a --classes b` or `--classes a,b`."""
    from swinseg.labels import split_list

    return split_list(values)


@cli_errors
def convert(
    file: Path = typer.Argument(..., help="Weight file in any supported layout."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file (.safetensors)."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model card (name or YAML) for what the file does not store: classes, "
        "preprocessing, image size."
    ),
    classes: list[str] = typer.Option(
        [], "--classes", help="Class names, index = label id (repeat the option or separate with commas)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", "--force", help="Replace an existing output file."),
) -> None:
    """Convert a trained Swin-Unet checkpoint to swinseg's format (safetensors with the model card).

    The result carries configuration, class names and preprocessing, so
    `swinseg predict --checkpoint OUT.safetensors` needs nothing else.
    """
    import dataclasses

    from swinseg.config import load_card
    from swinseg.weights import load_checkpoint, read_weights, save_checkpoint

    if output.suffix != ".safetensors":
        fail(f"{output}: the output must be a .safetensors file")
    if output.exists() and output.resolve() == file.resolve():
        fail(f"{output}: refusing to overwrite the input file")
    if output.exists() and not overwrite:
        fail(f"{output}: already exists (use --overwrite to replace it)")
    names = _class_names(classes)
    card = load_card(model) if model else None
    if card is not None and names:
        card = card.with_classes(names)
    net, card = load_checkpoint(file, card)
    if names and card.classes != tuple(names):
        if len(names) != card.network.num_classes:
            fail(f"--classes: {len(names)} names given but {file} has {card.network.num_classes} output classes")
        card = dataclasses.replace(card, classes=tuple(names))
    layout = read_weights(file).layout
    save_checkpoint(output, net, card, metadata={"converted_from": file.name, "source_layout": layout})
    params = sum(p.numel() for p in net.parameters())
    out.print(
        f"wrote {output} (swinseg format, {params:,} parameters, {card.network.img_size}px, "
        f"classes: {', '.join(card.classes)})",
        highlight=False, soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add the `weights` command group to the app."""
    weights_app.command("info")(info)
    weights_app.command("convert")(convert)
    app.add_typer(weights_app, name="weights")
