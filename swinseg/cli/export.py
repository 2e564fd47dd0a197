"""CLI: export (heavy imports stay inside the command body)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swinseg.cli._common import cli_errors, out


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("export")(export)


@cli_errors
def export(
    checkpoint: Optional[Path] = typer.Argument(
        None, help="swinseg checkpoint, or a reference .pth together with --model. (default: the stored model -m "
        "NAME, else the default stored model)", show_default=False,
    ),
    output: Path = typer.Option(..., "--output", "-o", help="The .onnx file to write.", show_default=False),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="A stored model's name (swinseg models list), or the model card of a reference "
        "checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Export a trained network to ONNX for the onnxruntime/openvino backends (CPU inference without torch).

    The file has a dynamic batch axis and the card (classes, preprocessing, network) and swinseg version in its
    metadata, so it is a --checkpoint for `swinseg predict` by itself; it is checked against torch before it is
    written (logits within 1e-4).
    """
    from swinseg.backends import ONNX_SUFFIX, OnnxGraph, export_onnx
    from swinseg.errors import SwinsegError
    from swinseg.predict import load_source
    from swinseg.store import resolve

    if not output.name.lower().endswith(ONNX_SUFFIX):
        raise SwinsegError(f"-o {output}: the exported file must end in {ONNX_SUFFIX}")
    if checkpoint is not None and output.resolve() == checkpoint.resolve():
        raise SwinsegError(f"{checkpoint}: the output would overwrite this input; choose another -o")
    if output.exists() and not overwrite:
        raise SwinsegError(f"-o {output}: exists; pass --overwrite to replace it")
    sources = resolve(model, checkpoints=[checkpoint] if checkpoint else ())
    if len(sources) > 1:
        raise SwinsegError(f"{sources[0].entry.name if sources[0].entry else checkpoint}: an ensemble of "
                           f"{len(sources)} models; export one model (a fold's checkpoint)")
    network, card = load_source(sources[0], prepared=False)
    if isinstance(network, OnnxGraph):
        raise SwinsegError(f"{network.path}: is an exported network already")
    export_onnx(network, card, output)
    size = output.stat().st_size / 1e6
    out.print(f"{card.name}: {len(card.classes)} classes, {card.network.img_size}px -> {output} ({size:.1f} MB, "
              "verified against torch)", highlight=False, soft_wrap=True)
