"""CLI: to-dicom (heavy imports stay inside the command body)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from swinseg.choices import DICOM_TYPES, MIN_CONTOUR_AREA
from swinseg.cli._common import choice_type, cli_errors, err, fail, out

DicomType = choice_type("DicomType", DICOM_TYPES)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("to-dicom")(to_dicom)


@cli_errors
def to_dicom(
    mask: Path = typer.Argument(..., help="Label map (NIfTI, NRRD, MHA) on the series' grid.", show_default=False),
    series: Path = typer.Option(..., "--series", "-s", help="The source DICOM series folder.", show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="The .dcm file to write.", show_default=False),
    output_type: DicomType = typer.Option(DicomType.seg, "--output-type", help="seg (DICOM SEG) or rtstruct."),
    labels: Optional[str] = typer.Option(
        None, "--labels", help="Label names: '1=liver,2=spleen' or 'liver,spleen' (labels 1, 2, ...). Default: "
        "label_1, label_2, ...",
    ),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model card (name or YAML) naming the labels."),
    series_uid: Optional[str] = typer.Option(
        None, "--series-uid", help="SeriesInstanceUID in a folder holding several DICOM series."
    ),
    min_contour_area: float = typer.Option(
        MIN_CONTOUR_AREA, "--min-contour-area", min=0.0,
        help="RTSTRUCT: leave out regions and holes of a slice smaller than this (mm²), counted in one warning. "
        "0 keeps every pixel.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
) -> None:
    """Write a label map made elsewhere (another tool, a hand annotation) as a DICOM SEG or an RTSTRUCT on its
    source series. The mask must lie on the series' grid (size, spacing, origin, direction); else the first
    difference is reported."""
    from swinseg.config import load_card
    from swinseg.labels import parse_labels
    from swinseg.to_dicom import labels_card, mask_to_dicom

    if model is not None and labels is not None:
        fail("give --model or --labels, not both")
    if not output.name.lower().endswith(".dcm"):
        fail(f"-o {output}: a DICOM file; name it .dcm")
    if output.exists() and not overwrite:
        fail(f"-o {output}: exists; pass --overwrite to replace it")
    card = load_card(model) if model is not None else None
    if labels is not None:
        card = labels_card(parse_labels(labels), "to-dicom")
    note = mask_to_dicom(mask, series, output, output_type.value, card=card, series_uid=series_uid,
                         min_contour_area=min_contour_area)
    if note:
        err.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    what = "DICOM SEG" if output_type.value == "seg" else "RTSTRUCT"
    out.print(f"wrote {output} ({what} of {mask.name} on {series})", highlight=False, soft_wrap=True)
