"""CLI: predict (commands registered on the main app; heavy imports stay inside the command bodies)."""
from __future__ import annotations

import dataclasses
import json
import traceback
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from swinseg.choices import BACKENDS, MIN_CONTOUR_AREA, OUTPUT_TYPES, PLANES, PRECISIONS, PROTOCOLS
from swinseg.cli._common import choice_type, cli_errors, err, out, state
from swinseg.defaults import TILE_OVERLAP

Plane = choice_type("Plane", PLANES)
Protocol = choice_type("Protocol", PROTOCOLS)
Precision = choice_type("Precision", PRECISIONS)
OutputType = choice_type("OutputType", OUTPUT_TYPES)
Backend = choice_type("Backend", BACKENDS)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("predict")(predict)


@cli_errors
def predict(
    inputs: List[Path] = typer.Argument(
        ..., help="Scans (NIfTI, NRRD, MHA/MHD, PNG/JPEG/TIFF), DICOM series folders, or folders of scans.",
        show_default=False,
    ),
    output: str = typer.Option(
        ..., "--output", "-o", show_default=False,
        help="Mask file for one scan (.nii.gz, .nrrd, .mha, .png, ...), or a folder: masks named after the cases "
        "(.nii.gz; .png for 2-D images).",
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m",
        help="A stored model's name (swinseg models list), else a model card name or YAML file (with --weights, "
        "or as the card of a --checkpoint). (default: the stored default model)", show_default=False,
    ),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Weight file for --model."),
    checkpoint: Optional[List[Path]] = typer.Option(
        None, "--checkpoint", "-c",
        help="swinseg checkpoint, an exported .onnx (swinseg export), or a reference Swin-Unet .pth with --model. "
        "Repeat it for an ensemble: the softmax of all models averaged on each scan's grid (models may differ in "
        "plane, spacing, context and backend; their classes must agree). A training run folder stands for its "
        "final model, a cross-validation run folder (train --fold all) for all its folds.",
    ),
    tta: bool = typer.Option(False, "--tta", help="Average the softmax over flips of each slice (up to 4 passes: "
                             "the flips the model was trained with)."),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write softmax probabilities per class: <mask>_probabilities."
    ),
    output_type: OutputType = typer.Option(
        OutputType.auto, "--output-type",
        help="Mask format: auto (NIfTI; PNG for 2-D images; DICOM SEG for -o mask.dcm), dicom-seg or rtstruct "
        "(DICOM series inputs: a Segmentation object, or an RT Structure Set of contours).",
    ),
    min_contour_area: float = typer.Option(
        MIN_CONTOUR_AREA, "--min-contour-area", min=0.0,
        help="RTSTRUCT: leave out regions and holes of a slice smaller than this (mm²), counted in one warning; "
        "the speckle of an undertrained model. 0 keeps every pixel.",
    ),
    statistics: bool = typer.Option(
        False, "--statistics",
        help="Also write <mask>_statistics.json per case (volume ml, intensities under the mask, centroid, bounding "
        "box, border contact), and statistics.csv for an output folder. Implies --qc.",
    ),
    qc: bool = typer.Option(
        False, "--qc",
        help="Quality control per case: a qc block (verdict ok/review/fail, score, reasons, signals) in "
        "<mask>_statistics.json, qc.csv (worst first) for an output folder, and a line for each case not ok.",
    ),
    preview: bool = typer.Option(False, "--preview", help="Also write <mask>_preview.png: the mask over the scan."),
    keep_largest: bool = typer.Option(
        False, "--keep-largest", help="Keep only the largest 3-D connected component of each class."
    ),
    classes: Optional[str] = typer.Option(
        None, "--classes", help="Keep only these classes (names or ids, comma separated, e.g. liver,spleen)."
    ),
    axis: Optional[Plane] = typer.Option(
        None, "--axis", help="Slice plane, found from the scan's direction. (default: the model's, axial)",
        show_default=False,
    ),
    tile_overlap: float = typer.Option(
        TILE_OVERLAP, "--tile-overlap", min=0.0, max=0.95,
        help="Overlap of neighbouring tiles, for models with a target spacing (slices resampled and tiled).",
    ),
    protocol: Protocol = typer.Option(
        Protocol.fast, "--protocol",
        help="fast, or reference: the published evaluation path (1 slice per pass, nearest resize back).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    backend: Backend = typer.Option(
        Backend.auto, "--backend",
        help="Network runtime: auto (torch on CUDA; on CPU openvino, else onnxruntime, else torch), torch, "
        "onnxruntime or openvino (CPU, float32; a torch checkpoint is exported once and cached).",
    ),
    precision: Precision = typer.Option(Precision.auto, "--precision", help="auto: bf16/fp16 on CUDA, fp32 on CPU."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-b", min=1,
        help="Network inputs (tiles or whole slices) per forward pass (default 16 on torch, 8 on onnxruntime and "
        "openvino; 1 with --protocol reference).",
    ),
    series: Optional[str] = typer.Option(None, "--series", help="SeriesInstanceUID in a multi-series DICOM folder."),
    allow_gaps: bool = typer.Option(
        False, "--allow-gaps",
        help="A DICOM series with missing slices: interpolate them onto a uniform grid (said per case) instead of "
        "refusing it. The mask is then on that grid (NIfTI; not DICOM SEG).",
    ),
    channel: Optional[int] = typer.Option(None, "--channel", min=0, help="Channel/volume of a 4-D or vector image."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip those cases)."),
    shard: Optional[str] = typer.Option(
        None, "--shard", help="Predict shard i of n (i/n, from 0); automatic under torchrun (RANK/WORLD_SIZE)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or per-case lines (errors only)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per case on stdout (JSON Lines)."),
) -> None:
    """Segment scans: label maps with the scans' own geometry (same affine, shape, spacing)."""
    from swinseg import predict as lib
    from swinseg import runner
    from swinseg.device import precision_name, rank_device, torchrun_rank
    from swinseg.ensemble import Ensemble
    from swinseg.errors import SwinsegError
    from swinseg.postprocess import parse_classes
    from swinseg.predict_options import PredictOptions
    from swinseg.qc import write_qc_csv
    from swinseg.statistics import write_statistics_csv
    from swinseg.store import resolve

    shard_of = runner.parse_shard(shard) if shard else None
    rank = torchrun_rank()
    if rank is not None:
        if shard_of is not None:
            raise SwinsegError("--shard is set by torchrun (RANK/WORLD_SIZE) already; drop --shard")
        shard_of = (rank[0], rank[1])
        device = rank_device(device, rank[2])
    predict_options = PredictOptions(device=device, batch_size=batch_size, precision=precision.value, tta=tta,
                              protocol=protocol.value, tile_overlap=tile_overlap, backend=backend.value)
    if save_probabilities:
        predict_options.check_probabilities()
    qc = qc or statistics
    cases = runner.plan_cases(inputs, output, probabilities=save_probabilities, statistics=qc,
                              preview=preview, output_type=output_type.value)
    if shard_of is not None:
        cases = runner.shard_cases(cases, *shard_of)
    show = _Reporter(quiet=quiet, as_json=as_json, rank=rank[0] if rank else None)
    if not cases:
        show.note(f"shard {shard_of[0]}/{shard_of[1]}: no cases" if shard_of else "no cases")
        return
    pending = [case for case in cases if overwrite or not runner.is_finished(case)]
    options = runner.RunOptions(plane=axis.value if axis else None, series=series, channel=channel, overwrite=overwrite,
                                keep_largest=keep_largest, allow_gaps=allow_gaps, min_contour_area=min_contour_area,
                                qc=qc)
    with show.progress(len(cases)) as progress:
        if pending:
            members = []
            sources = resolve(model, weights, checkpoint or ())
            for source in sources:
                net, card = lib.load_source(source, predict_options)
                members.append(lib.Predictor(net, card, predict_options))
                for note in members[-1].notes:
                    show.note(note)
            predictor = members[0] if len(members) == 1 else Ensemble(members, [s.label for s in sources])
            first, card = members[0], members[0].card
            if classes:
                options = dataclasses.replace(options, classes=parse_classes(classes, card.classes))
            ensemble = f"ensemble of {len(members)} models, " if len(members) > 1 else ""
            show.note(
                f"{ensemble}{card.name}: {len(card.classes)} classes on {first.device} ({first.backend}), "
                f"{precision_name(first.dtype)}, batch {first.batch_size}, protocol {protocol.value}"
                f"{', TTA' if tta else ''}, {first.path.description}; "
                f"{len(pending)} of {len(cases)} case(s) to predict"
                + (f" (shard {shard_of[0]}/{shard_of[1]})" if shard_of else "")
            )
            run = runner.predict_cases(predictor, cases, options, on_start=progress.start_case,
                                    on_slices=progress.slices_done)
        else:
            run = (runner.CaseResult.skipped(case) for case in cases)
        results = []
        for result in run:
            progress.case_done()
            show.result(result)
            results.append(result)
    if qc and shard_of is None and (len(cases) > 1 or Path(output).is_dir()):
        table = runner.statistics_table(results)
        if table:
            csv_path = cases[0].output.parent / "statistics.csv"
            write_statistics_csv(csv_path, table)
            show.note(f"statistics of {len(table)} case(s): {csv_path}")
        checked = runner.qc_table(results)
        if checked:
            qc_path = cases[0].output.parent / "qc.csv"
            write_qc_csv(qc_path, checked)
            flagged = sum(block.get("verdict") != "ok" for block in checked.values())
            show.note(f"quality control of {len(checked)} case(s), {flagged} not ok: {qc_path}")
    show.summary()
    if show.counts["failed"]:
        raise typer.Exit(1)


class _Progress:
    """Cases and slices bars on stderr (or nothing)."""

    def __init__(self, bar: Progress | None, total_cases: int) -> None:
        self.bar = bar
        if bar is not None:
            self.cases = bar.add_task("cases", total=total_cases)
            self.slices = bar.add_task("slices", total=None, visible=False)

    def __enter__(self) -> _Progress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def start_case(self, case: Any, n_slices: int) -> None:
        if self.bar is not None:
            self.bar.reset(self.slices, total=n_slices, visible=True, description=escape(case.input.name))

    def slices_done(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.slices, n)

    def case_done(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.cases)


class _Reporter:
    """Per-case lines (or JSON Lines) on stdout, notes and failures on stderr, counts for the summary."""

    def __init__(self, *, quiet: bool, as_json: bool, rank: int | None) -> None:
        self.quiet, self.as_json = quiet, as_json
        self.prefix = f"[rank {rank}] " if rank is not None else ""
        self.show_bar = not quiet and err.is_terminal and not rank
        self.counts = {"done": 0, "skipped": 0, "failed": 0}
        self.lines = out  # per-case lines; above the bar when stdout and the bar share the terminal

    def progress(self, total_cases: int) -> _Progress:
        if not self.show_bar:
            return _Progress(None, total_cases)
        bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=err, transient=True, redirect_stdout=False, redirect_stderr=False,
        )
        if out.is_terminal:
            self.lines = err
        return _Progress(bar, total_cases)

    def note(self, text: str) -> None:
        if not self.quiet and not self.as_json:
            err.print(escape(self.prefix + text), highlight=False, soft_wrap=True)

    def result(self, result: Any) -> None:
        self.counts[result.status] += 1
        for note in result.notes:
            err.print(f"[yellow]warning:[/yellow] {escape(self.prefix + note)}", highlight=False, soft_wrap=True)
        if self.as_json:
            typer.echo(json.dumps(result.to_dict()))
        if result.status == "failed":
            message = result.message
            if str(result.case.input) not in message and result.case.input.name not in message:
                message = f"{result.case.input}: {message}"
            err.print(f"[red]failed:[/red] {escape(self.prefix + message)}", highlight=False, soft_wrap=True)
            if state.debug and result.error is not None:
                err.print("".join(traceback.format_exception(result.error)), highlight=False, markup=False)
            return
        if self.quiet or self.as_json:
            return
        name = escape(self.prefix + result.case.input.name)
        if result.status == "skipped":
            self.lines.print(f"[dim]{name}: skipped, {escape(str(result.case.output))} exists[/dim]", highlight=False)
            return
        shape = "x".join(str(n) for n in result.shape[::-1])
        spacing = "x".join(f"{s:.3g}" for s in result.spacing[::-1])
        found = ", ".join(result.voxels) or "no foreground"
        self.lines.print(
            f"[green]{name}[/green]  {shape}  {spacing} mm  {result.seconds:.1f} s  {escape(found)}"
            f"  -> {escape(str(result.case.output))}",
            highlight=False, soft_wrap=True,
        )
        verdict = (result.qc or {}).get("verdict", "ok")
        if verdict != "ok":
            colour = "red" if verdict == "fail" else "yellow"
            reasons = "; ".join(result.qc["reasons"])
            self.lines.print(f"[{colour}]qc {verdict}:[/{colour}] {name} (score {result.qc['score']:.2f}): "
                             f"{escape(reasons)}", highlight=False, soft_wrap=True)

    def summary(self) -> None:
        total = sum(self.counts.values())
        if self.quiet or self.as_json or total <= 1 and not self.counts["skipped"]:
            return
        parts = [f"{n} {what}" for what, n in self.counts.items() if n]
        err.print(escape(self.prefix + f"{total} case(s): " + ", ".join(parts)), highlight=False, soft_wrap=True)
