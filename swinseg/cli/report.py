"""CLI: `swinseg report MASKS -o report.html` (heavy imports stay inside the command body)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from swinseg.cli._common import cli_errors, err, out


@cli_errors
def report_command(
    masks: Path = typer.Argument(..., help="A mask, or a folder of masks (e.g. a predict output folder)."),
    output: Path = typer.Option(..., "--output", "-o", help="The HTML page to write (self-contained)."),
    images: Optional[Path] = typer.Option(
        None, "--images", help="Scans (file or folder, matched by case name): the viewer draws the masks on them."
    ),
    reference: Optional[Path] = typer.Option(
        None, "--reference", "-r", help="Reference label maps (file or folder): Dice and HD95 (mm) columns."
    ),
    labels: Optional[List[str]] = typer.Option(
        None, "--labels", "-l", help="Class names: ids or id=name pairs, e.g. 1=liver,2=spleen, as evaluate's."
    ),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model card whose class names label ids."),
    dataset_json: Optional[Path] = typer.Option(
        None, "--dataset-json", help="nnU-Net dataset.json whose 'labels' name the ids."
    ),
    max_slices: int = typer.Option(
        96, "--max-slices", min=1, help="Slices per case in the viewer (evenly spaced when a scan has more)."
    ),
) -> None:
    """A review page: the cohort table (volumes, QC verdicts, Dice/HD95), sortable, flagged cases first; a click
    opens the case's slice viewer with its QC reasons and statistics. One HTML file, no server, no network.

    Class names: --labels, --model or --dataset-json, else the masks' statistics files, else a dataset.json beside
    the masks. QC verdicts come from the `qc` block of `<mask>_statistics.json` (predict --statistics).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from swinseg.evaluate import resolve_labels
    from swinseg.report_page import write_review

    names = resolve_labels(labels, model, dataset_json)
    with Progress(TextColumn("reading"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  console=err, transient=True, disable=not err.is_terminal) as bar:  # fmt: skip
        task = bar.add_task("", total=None)

        def advance(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=name)

        path, cases = write_review(masks, output, images=images, reference=reference, class_names=names,
                                   max_slices=max_slices, progress=advance)
    flagged = sum(case.flagged for case in cases)
    size_mb = path.stat().st_size / 1e6
    plural = "" if len(cases) == 1 else "s"
    out.print(f"review of {len(cases)} case{plural} ({flagged} flagged by QC) written to {path} ({size_mb:.1f} MB)",
              highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add `report` to the app."""
    app.command("report")(report_command)
