"""CLI: `swinseg evaluate PRED REF` (heavy imports stay inside the command body)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional

import typer

from swinseg.choices import EMPTY_POLICIES, EVALUATION_PROTOCOLS, HD95_DEFINITIONS
from swinseg.cli._common import choice_type, cli_errors, err, fail, out

_DIGITS = {"dice": 3, "iou": 3, "hd95": 2, "assd": 2, "pred_ml": 1, "ref_ml": 1, "nsd": 3}  # terminal table
_HEADERS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95 ({unit})", "assd": "ASSD ({unit})", "pred_ml": "pred ml",
            "ref_ml": "ref ml", "nsd": "NSD"}  # fmt: skip


HD95Definition = choice_type("HD95Definition", HD95_DEFINITIONS)
EmptyPolicy = choice_type("EmptyPolicy", EMPTY_POLICIES)
Protocol = choice_type("Protocol", EVALUATION_PROTOCOLS)


@cli_errors
def evaluate_command(
    prediction: Path = typer.Argument(..., help="Predicted label map, or a folder of them."),
    reference: Path = typer.Argument(..., help="Reference label map, or a folder (matched by case name)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Report folder: per_case.csv, summary.json, summary.md, dice_hd95.png."
    ),
    labels: Optional[List[str]] = typer.Option(
        None, "--labels", "-l", help="Labels to score: ids or id=name pairs, e.g. 1,2,3 or 1=liver,2=spleen."
    ),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                         help="Stored model or model card whose class names label ids."),
    dataset_json: Optional[Path] = typer.Option(
        None, "--dataset-json", help="nnU-Net dataset.json whose 'labels' name the ids."
    ),
    hd95: Optional[HD95Definition] = typer.Option(
        None, "--hd95", help="HD95 definition: medpy (pooled 95th percentile, the papers') (default) or max "
        "(larger directed 95th percentile, as MONAI).",
    ),
    empty: Optional[EmptyPolicy] = typer.Option(
        None, "--empty", help="Empty masks: worst (one empty: Dice 0, HD95 = image diagonal; default), nan "
        "(undefined -> NaN, left out of means) or paper (Swin-Unet/TransUNet rules).",
    ),
    protocol: Optional[Protocol] = typer.Option(
        None, "--protocol", help="synapse-paper: labels 1-8 with Synapse names, voxel units, paper empty rules, "
        "the paper's table.",
    ),
    voxel_units: bool = typer.Option(False, "--voxel-units", help="Distances in voxels (unit spacing), not mm."),
    nsd: Optional[float] = typer.Option(
        None, "--nsd", min=0.0, metavar="TOL",
        help="Also report the normalised surface Dice at this tolerance (mm; voxels with --voxel-units).",
    ),
    resample: bool = typer.Option(
        False, "--resample-to-reference", help="Resample predictions onto the reference grid (nearest neighbour) "
        "when their geometry differs, instead of failing.",
    ),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Cases scored in parallel processes (0 = every usable core)."),
    as_json: bool = typer.Option(False, "--json", help="Print summary.json to stdout instead of tables."),
    worst: int = typer.Option(5, "--worst", help="How many worst case/class rows to list.", min=0),
    images: Optional[Path] = typer.Option(
        None, "--images", help="Scans (file or folder): overlay pictures of the 3 worst cases in REPORT_DIR/overlays/."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, metavar="N",
        help="Resamples for the 95% bootstrap confidence intervals of the mean Dice, HD95 and NSD per class, the "
        "volume agreement (Bland-Altman, ICC(3,1)) and --compare; 0 = none.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling (same seed, same intervals)."),
    compare: Optional[Path] = typer.Option(
        None, "--compare", metavar="PRED_B",
        help="A second method's predictions (file or folder), scored the same way: paired comparison PREDICTION - "
        "PRED_B per class (mean difference with its bootstrap CI, Wilcoxon signed-rank p).",
    ),
) -> None:
    """Dice, IoU, HD95, ASSD and volumes per case and class, equal to medpy, with reports, confidence intervals,
    volume agreement and an optional paired comparison of two methods."""
    from swinseg import cohort_stats
    from swinseg import evaluate as ev
    from swinseg import evaluate_report as rep

    if protocol is not None:
        if labels or model or dataset_json:
            fail("--protocol synapse-paper fixes the labels (1-8, Synapse names); drop --labels/--model/--dataset-json")
        for given, wanted, option in ((hd95, "medpy", "--hd95"), (empty, "paper", "--empty")):
            if given is not None and given.value != wanted:
                fail(f"{option} {given.value} contradicts --protocol synapse-paper (which uses {wanted})")
        settings = ev.Settings.synapse_paper(resample_to_reference=resample)
        label_names = ev.card_labels(ev.SYNAPSE_CARD)
    else:
        settings = ev.Settings(
            hd95=(hd95 or HD95Definition.medpy).value,
            empty=(empty or EmptyPolicy.worst).value,
            voxel_units=voxel_units,
            resample_to_reference=resample,
            nsd_tolerance=nsd,
        )
        label_names = ev.resolve_labels(labels, model, dataset_json)
    if jobs < 0:
        fail(f"--jobs must be >= 0, got {jobs}")
    if images is not None and output is None:
        fail("--images draws pictures into the report folder: give -o REPORT_DIR too")
    if compare is not None and not bootstrap:
        fail("--compare reports bootstrap intervals: give --bootstrap N with N > 0")

    result = _run_with_progress(ev, prediction, reference, label_names, settings, jobs, quiet=as_json)
    summary = result.summary(worst=worst, bootstrap=bootstrap, seed=seed)
    if compare is not None:
        other = _run_with_progress(ev, compare, reference, result.labels, settings, jobs, quiet=as_json)
        summary["comparison"] = cohort_stats.compare_evaluations(result, other, bootstrap, seed)
    if output is not None:
        written = rep.write_reports(result, output, summary)
        if images is not None:
            written += rep.write_worst_overlays(result, images, output)
        names = ", ".join(str(p.relative_to(output)) for p in written)
        err.print(f"reports written to {output}/ ({names})", highlight=False)
    if as_json:
        typer.echo(json.dumps(rep.json_safe(summary), indent=2, allow_nan=False))
    else:
        _print_tables(ev, rep, summary, worst)
        if "statistics" in summary:
            _print_statistics(rep, summary["statistics"], unit=summary["definitions"]["distance_unit"])
        if "comparison" in summary:
            _print_comparison(rep, summary["comparison"], unit=summary["definitions"]["distance_unit"])
    _warn_unmatched(ev, summary)


def _run_with_progress(ev: Any, prediction: Path, reference: Path, labels: Any, settings: Any, jobs: int,
                       quiet: bool) -> Any:  # fmt: skip
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.description}"), console=err, transient=True, disable=quiet or not err.is_terminal,
    ) as bar:  # fmt: skip
        task = bar.add_task("", total=None)

        def advance(done: int, total: int, case_result: Any) -> None:
            name = case_result.case.name if case_result is not None else ""
            bar.update(task, completed=done, total=total, description=name)

        return ev.evaluate(prediction, reference, labels=labels, settings=settings, jobs=jobs, progress=advance)


def _print_tables(ev: Any, rep: Any, summary: dict[str, Any], worst: int) -> None:
    from rich.table import Table

    definitions = summary["definitions"]
    unit = definitions["distance_unit"]
    if summary["protocol"] == "synapse-paper":
        header, row = rep.paper_table(summary, Path(summary["prediction"]).name)
        wide = out.width >= 120
        paper = Table(title="Synapse multi-organ CT, the Swin-Unet/TransUNet protocol (DSC %, HD95 in voxels)"
                      if wide else "Swin-Unet/TransUNet protocol")  # fmt: skip
        if wide:  # the paper's layout: one row per method
            for name in header:
                paper.add_column(name.replace("_", " "), justify="left" if name == "Method" else "right")
            paper.add_row(*row)
        else:  # narrow terminal: the same numbers, one line each
            paper.add_column("")
            paper.add_column(row[0], justify="right")
            for name, value in zip(header[1:], row[1:]):
                paper.add_row(name.replace("_", " "), value)
        out.print(paper)

    # all columns on wide terminals; the reports always hold everything
    with_nsd = ("nsd",) if "nsd" in definitions else ()
    if out.width >= 130:
        shown: tuple[str, ...] = (*ev.METRICS, *with_nsd)
    else:
        shown = ("dice", "hd95", *with_nsd, "pred_ml", "ref_ml") if out.width >= 100 else ("dice", "hd95", *with_nsd)
    table = Table(title=f"{summary['n_cases']} cases: mean ± std over cases")
    table.add_column("class")
    table.add_column("n", justify="right")
    for metric in shown:
        table.add_column(_HEADERS[metric].format(unit=unit), justify="right")
    table.add_column("empty p/r/b", justify="right")
    for label, entry in summary["per_class"].items():
        flags = entry["flags"]
        table.add_row(
            f"{label} {entry['name']}", str(entry["dice"]["n"]),
            *(rep.mean_std(entry[m], _DIGITS[m]) for m in shown),
            f"{flags['pred_empty']}/{flags['ref_empty']}/{flags['both_empty']}",
        )  # fmt: skip
    means = summary["mean_over_classes"]
    table.add_section()
    table.add_row(
        "mean over classes", "", *(rep.fmt(means[m], _DIGITS[m]) if m in means else "" for m in shown), "",
        style="bold",
    )
    out.print(table)

    if worst and summary["worst_cases"]:
        cases = Table(title="worst cases (lowest Dice)")
        for name in ("case", "class", "Dice", f"HD95 ({unit})", "pred ml", "ref ml", "flag"):
            cases.add_column(name)
        for row in summary["worst_cases"]:
            cases.add_row(row["case"], row["class"], rep.fmt(row["dice"], 4), rep.fmt(row["hd95"], 2),
                          rep.fmt(row["pred_ml"], 1), rep.fmt(row["ref_ml"], 1), row["flag"])  # fmt: skip
        out.print(cases)
    out.print(
        f"HD95 = {definitions['hd95']}: {definitions['hd95_definition']}. Distances in {unit} "
        f"({definitions['spacing']}). Empty masks: {definitions['empty_policy']}.",
        highlight=False,
    )


def _print_statistics(rep: Any, statistics: dict[str, Any], unit: str) -> None:
    from rich.table import Table

    per_class = statistics["per_class"]
    metrics = list(next(iter(per_class.values()))["ci"]) if per_class else []
    table = Table(title=f"means [95% bootstrap CI, {statistics['resamples']} resamples, seed {statistics['seed']}]; "
                        "volumes: prediction - reference (ml)")
    table.add_column("class")
    for metric in metrics:
        table.add_column(_HEADERS[metric].format(unit=unit), justify="right")
    for name in ("vol bias", "95% LoA", "ICC(3,1)"):
        table.add_column(name, justify="right")
    for label, entry in per_class.items():
        agreement = entry["volume"]["bland_altman"]
        table.add_row(
            f"{label} {entry['name']}", *(rep.ci_text(entry["ci"][m], _DIGITS[m]) for m in metrics),
            rep.fmt(agreement["bias"], 1), f"{rep.fmt(agreement['loa_low'], 1)} to {rep.fmt(agreement['loa_high'], 1)}",
            rep.fmt(entry["volume"]["icc_3_1"], 3),
        )  # fmt: skip
    out.print(table)


def _print_comparison(rep: Any, comparison: dict[str, Any], unit: str) -> None:
    from rich.table import Table

    table = Table(title=f"A - B on {comparison['n_cases']} cases (A {comparison['a']}, B {comparison['b']}): "
                        "mean difference [95% bootstrap CI], Wilcoxon signed-rank p")
    table.add_column("class")
    table.add_column("metric")
    for name in ("mean A", "mean B", "A - B [95% CI]", "p"):
        table.add_column(name, justify="right")
    for label, entry in comparison["per_class"].items():
        for metric in ("dice", "hd95", "nsd"):
            if metric in entry:
                row, digits = entry[metric], _DIGITS[metric]
                table.add_row(f"{label} {entry['name']}", _HEADERS[metric].format(unit=unit),
                              rep.fmt(row["mean_a"], digits), rep.fmt(row["mean_b"], digits),
                              f"{rep.fmt(row['mean_difference'], digits)} [{rep.fmt(row['low'], digits)}, "
                              f"{rep.fmt(row['high'], digits)}]", rep.fmt(row["wilcoxon_p"], 4))  # fmt: skip
    out.print(table)


def _warn_unmatched(ev: Any, summary: dict[str, Any]) -> None:
    for key, what in (
        ("missing_predictions", "references without a prediction (not scored)"),
        ("extra_predictions", "predictions without a reference (ignored)"),
        ("labels_only_in_predictions", "labels found only in predictions (not scored; see --labels)"),
    ):
        names = [str(v) for v in summary[key]]
        if names:
            err.print(f"[yellow]warning:[/yellow] {len(names)} {what}: {ev.preview(names, 10)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add `evaluate` to the app."""
    app.command("evaluate")(evaluate_command)
