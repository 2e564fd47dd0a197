"""CLI: overlay (label maps drawn over axial slices). Heavy imports stay inside the command bodies."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from swinseg.cli._common import cli_errors, fail, out


@cli_errors
def overlay(
    image: Path = typer.Argument(..., help="The scan (NIfTI, NRRD, MHA, DICOM folder, ...)."),
    mask: Path = typer.Argument(..., help="A label map on the scan's grid (e.g. a prediction)."),
    output: Path = typer.Option(..., "--output", "-o", help="PNG file to write."),
    reference: Optional[Path] = typer.Option(
        None, "--reference", "-r", help="A second label map shown beside the first (e.g. the ground truth)."
    ),
    slices: int = typer.Option(8, "--slices", "-n", min=1, help="Number of evenly spaced axial slices."),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Stored model or model card (name or YAML) whose class names label the legend."
    ),
    labels: Optional[str] = typer.Option(
        None, "--labels",
        help="Label names: 'liver,spleen' (labels 1, 2, ...) or 'ID=name' pairs ('5=aorta'), as evaluate's --labels.",
    ),
    window: Optional[tuple[float, float]] = typer.Option(
        None, "--window", help="Display window LO HI (HU). Default: the card's CT window, or -125 275 for CT-like "
        "images and the 0.5-99.5 percentiles otherwise.",
    ),
) -> None:
    """Draw label maps over evenly spaced axial slices of a scan: a PNG grid with a legend.

    Radiological view (anterior up, patient's right on the left), physical aspect ratio, labelled slices only.
    Class names: --model, --labels, or an nnU-Net dataset.json beside the mask (or one folder up).
    """
    from swinseg.labels import parse_labels
    from swinseg.overlay import overlay_files
    from swinseg.store import model_card

    if model is not None and labels is not None:
        fail("give --model or --labels, not both")
    card = model_card(model) if model is not None else None
    named = {k: name or f"label_{k}" for k, name in parse_labels(labels).items()} if labels else None
    class_names = card.classes if card is not None else named
    if window is None:
        window = card.preprocessing.window if card is not None else "auto"
    title = f"{image.name}: {mask.name}" + (f" vs {reference.name}" if reference is not None else "")
    path = overlay_files(
        image, mask, output, reference_path=reference, class_names=class_names, window=window, n_slices=slices,
        title=title,
    )
    out.print(f"wrote {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("overlay")(overlay)
