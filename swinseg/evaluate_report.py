"""The reports of an evaluation: per_case.csv, summary.json, summary.md, dice_hd95.png (box plots),
bland_altman.png (volume agreement per class) and overlay pictures of the worst cases; the number formats that
the terminal tables share. The scores come from swinseg.evaluate, the cohort statistics from
swinseg.cohort_stats."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from swinseg import cohort_stats
from swinseg.errors import SwinsegError
from swinseg.evaluate import CSV_COLUMNS, FLAGS, METRICS, Evaluation, PairScores
from swinseg.io import atomic_output, case_name, find_images
from swinseg.overlay import overlay_files


def write_reports(evaluation: Evaluation, folder: str | Path, summary: dict[str, Any] | None = None) -> list[Path]:
    """Write per_case.csv, summary.json, summary.md, dice_hd95.png and bland_altman.png into `folder` (each
    atomically); `summary`: the evaluation's summary if already computed (with its statistics and comparison)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SwinsegError(f"{folder}: report folder is a file")
    folder.mkdir(parents=True, exist_ok=True)
    rows, summary = evaluation.rows(), summary or evaluation.summary()
    written = []
    with atomic_output(folder / "per_case.csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            columns = CSV_COLUMNS if evaluation.settings.nsd_tolerance is None else (
                *CSV_COLUMNS[:CSV_COLUMNS.index("assd") + 1], "nsd", *CSV_COLUMNS[CSV_COLUMNS.index("assd") + 1:])
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({key: _csv_value(row[key]) for key in columns} for row in rows)
    written.append(folder / "per_case.csv")
    with atomic_output(folder / "summary.json") as tmp:
        tmp.write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    written.append(folder / "summary.json")
    with atomic_output(folder / "summary.md") as tmp:
        tmp.write_text(summary_markdown(summary), encoding="utf-8")
    written.append(folder / "summary.md")
    with atomic_output(folder / "dice_hd95.png") as tmp:
        box_plots(evaluation, tmp)
    written.append(folder / "dice_hd95.png")
    with atomic_output(folder / "bland_altman.png") as tmp:
        bland_altman_plots(evaluation, tmp)
    written.append(folder / "bland_altman.png")
    return written


def write_worst_overlays(evaluation: Evaluation, images: str | Path, folder: str | Path, count: int = 3) -> list[Path]:
    """Overlay pictures (prediction | reference) of the `count` cases with the lowest mean Dice into
    `folder`/overlays/, the scans taken from `images` (a scan file, or a folder matched by case name)."""
    images = Path(images)
    scan_files = [images] if images.is_file() else find_images(images)
    scans = {case_name(path, strip_channel=True): path for path in scan_files}
    if len(scan_files) == 1 and len(evaluation.results) == 1:  # one scan for one case, whatever its name
        scans = {evaluation.results[0].case.name: scan_files[0]}

    def mean_dice(result: PairScores) -> float:
        values = [s.dice for s in result.scores.values() if not math.isnan(s.dice)]
        return sum(values) / len(values) if values else math.inf

    written = []
    for result in sorted(evaluation.results, key=mean_dice)[:count]:
        scan = scans.get(result.case.name)
        if scan is None:
            raise SwinsegError(f"--images {images}: no scan for case {result.case.name!r}")
        out_png = Path(folder) / "overlays" / f"{result.case.name}.png"
        overlay_files(scan, result.case.prediction, out_png, reference_path=result.case.reference,
                      class_names=evaluation.labels,
                      title=f"{result.case.name}: mean Dice {mean_dice(result):.3f} (prediction | reference)")
        written.append(out_png)
    return written


def json_safe(value: Any) -> Any:
    """The value with NaN/inf replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return value


def fmt(value: float, digits: int = 4) -> str:
    """A number for tables ("-" for NaN)."""
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def paper_table(summary: dict[str, Any], method: str) -> tuple[list[str], list[str]]:
    """The Swin-Unet/TransUNet results table: method, DSC and HD95 means over classes, then per-class DSC (%)."""
    per_class = summary["per_class"]
    header = ["Method", "DSC", "HD95"] + [per_class[label]["name"] for label in per_class]
    row = [
        method,
        fmt(100 * summary["mean_over_classes"]["dice"], 2),
        fmt(summary["mean_over_classes"]["hd95"], 2),
    ] + [fmt(100 * per_class[label]["dice"]["mean"], 2) for label in per_class]
    return header, row


def summary_markdown(summary: dict[str, Any]) -> str:
    """summary.md: settings, per-class table (mean ± std), mean over classes, worst cases, unmatched cases."""
    unit = summary["definitions"]["distance_unit"]
    lines = [
        "# swinseg evaluation",
        "",
        f"- prediction: `{summary['prediction']}`; reference: `{summary['reference']}`; "
        f"{summary['n_cases']} cases; swinseg {summary['swinseg_version']}; {summary['created']}",
        f"- HD95 definition `{summary['definitions']['hd95']}`: {summary['definitions']['hd95_definition']}",
        f"- distances in {unit} ({summary['definitions']['spacing']}); volumes in ml",
        f"- empty masks, policy `{summary['definitions']['empty_policy']}`: "
        f"{summary['definitions']['empty_policy_definition']}",
    ]
    if summary["protocol"]:
        lines.append(f"- protocol: `{summary['protocol']}`")
    if summary["protocol"] == "synapse-paper":
        header, row = paper_table(summary, Path(summary["prediction"]).name)
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(row) + " |"]
    lines += [
        "",
        f"| label | class | n | Dice | IoU | HD95 ({unit}) | ASSD ({unit}) | pred ml | ref ml | "
        "pred empty | ref empty | both empty |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, entry in summary["per_class"].items():
        cells = [label, entry["name"], str(entry["dice"]["n"])]
        cells += [mean_std(entry[metric], 2 if metric.endswith("ml") else 4) for metric in METRICS]
        cells += [str(entry["flags"][flag]) for flag in FLAGS]
        lines.append("| " + " | ".join(cells) + " |")
    means = summary["mean_over_classes"]
    lines.append(
        "| | **mean over classes** | | " + " | ".join(f"**{fmt(means[m])}**" for m in ("dice", "iou", "hd95", "assd"))
        + " | | | | | |"
    )
    lines += [
        "", "## Worst cases (lowest Dice)", "",
        f"| case | class | Dice | HD95 ({unit}) | pred ml | ref ml | flag |", "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row in summary["worst_cases"]:
        lines.append(
            f"| {row['case']} | {row['class']} | {fmt(row['dice'])} | {fmt(row['hd95'])} | "
            f"{fmt(row['pred_ml'], 2)} | {fmt(row['ref_ml'], 2)} | {row['flag']} |"
        )
    for key, title in (("missing_predictions", "References without a prediction"),
                       ("extra_predictions", "Predictions without a reference"),
                       ("labels_only_in_predictions", "Labels only in predictions (not evaluated)")):  # fmt: skip
        if summary[key]:
            lines += ["", f"## {title}", "", ", ".join(str(v) for v in summary[key])]
    if "statistics" in summary:
        lines += statistics_markdown(summary["statistics"], unit)
    if "comparison" in summary:
        lines += comparison_markdown(summary["comparison"], unit)
    return "\n".join(lines) + "\n"


def mean_std(stats: dict[str, Any], digits: int) -> str:
    if stats["n"] == 0:
        return "-"
    text = fmt(stats["mean"], digits)
    return text if math.isnan(stats["std"]) else f"{text} ± {fmt(stats['std'], digits)}"


def box_plots(evaluation: Evaluation, path: str | Path) -> None:
    """dice_hd95.png: per-class box plots of Dice and HD95 over cases (NaN values left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = evaluation.rows()
    names = list(evaluation.labels.values())
    width = max(6.0, 0.9 * len(names) + 2)
    figure, axes = plt.subplots(1, 2, figsize=(2 * width, 4.8), constrained_layout=True)
    for axis, metric, title in (
        (axes[0], "dice", "Dice"),
        (axes[1], "hd95", f"HD95 ({evaluation.settings.hd95}, {evaluation.settings.unit})"),
    ):
        data = [[row[metric] for row in rows if row["label"] == label and not math.isnan(row[metric])]
                for label in evaluation.labels]
        axis.boxplot([values or [math.nan] for values in data], showmeans=True)
        axis.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right")
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    figure.suptitle(f"{len(evaluation.results)} cases, empty policy '{evaluation.settings.empty}'")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def ci_text(entry: dict[str, Any], digits: int) -> str:
    """"mean [low, high]" of a bootstrap CI entry ("-" without values)."""
    if not entry["n"]:
        return "-"
    return f"{fmt(entry['mean'], digits)} [{fmt(entry['low'], digits)}, {fmt(entry['high'], digits)}]"


def statistics_markdown(statistics: dict[str, Any], unit: str) -> list[str]:
    """summary.md lines: bootstrap CIs of the means and the volume agreement per class."""
    per_class = statistics["per_class"]
    metrics = list(next(iter(per_class.values()))["ci"]) if per_class else []
    titles = {"dice": "Dice", "hd95": f"HD95 ({unit})", "nsd": "NSD"}
    lines = [
        "", f"## Means with 95% bootstrap confidence intervals ({statistics['resamples']} resamples, "
        f"seed {statistics['seed']})", "",
        "| label | class | n | " + " | ".join(titles[m] for m in metrics) + " |",
        "|---|---|---|" + "---|" * len(metrics),
    ]
    for label, entry in per_class.items():
        n = entry["ci"][metrics[0]]["n"] if metrics else 0
        cells = [ci_text(entry["ci"][m], 2 if m == "hd95" else 4) for m in metrics]
        lines.append(f"| {label} | {entry['name']} | {n} | " + " | ".join(cells) + " |")
    lines += [
        "", "## Volume agreement (prediction - reference, ml)", "",
        f"{statistics['definitions']['bland_altman']}. {statistics['definitions']['icc']}.", "",
        "| label | class | n | bias | SD | 95% limits of agreement | ICC(3,1) |", "|---|---|---|---|---|---|---|",
    ]
    for label, entry in per_class.items():
        agreement, icc = entry["volume"]["bland_altman"], entry["volume"]["icc_3_1"]
        lines.append(f"| {label} | {entry['name']} | {agreement['n']} | {fmt(agreement['bias'], 2)} | "
                     f"{fmt(agreement['sd'], 2)} | {fmt(agreement['loa_low'], 2)} to {fmt(agreement['loa_high'], 2)} | "
                     f"{fmt(icc, 3)} |")
    return lines


def comparison_markdown(comparison: dict[str, Any], unit: str) -> list[str]:
    """summary.md lines: the paired comparison of method A with method B per class and metric."""
    titles = {"dice": "Dice", "hd95": f"HD95 ({unit})", "nsd": "NSD"}
    lines = [
        "", "## Paired comparison: A - B", "",
        f"- A: `{comparison['a']}`; B: `{comparison['b']}`; {comparison['n_cases']} cases scored by both",
        f"- {comparison['definition']} ({comparison['resamples']} resamples, seed {comparison['seed']})",
        "", "| label | class | metric | n | mean A | mean B | A - B [95% CI] | Wilcoxon p |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, entry in comparison["per_class"].items():
        for metric, title in titles.items():
            if metric not in entry:
                continue
            row, digits = entry[metric], 2 if metric == "hd95" else 4
            diff = f"{fmt(row['mean_difference'], digits)} [{fmt(row['low'], digits)}, {fmt(row['high'], digits)}]"
            lines.append(f"| {label} | {entry['name']} | {title} | {row['n']} | {fmt(row['mean_a'], digits)} | "
                         f"{fmt(row['mean_b'], digits)} | {diff} | {fmt(row['wilcoxon_p'], 4)} |")
    for key, side in (("only_in_a", "A"), ("only_in_b", "B")):
        if comparison[key]:
            lines += ["", f"Cases scored only in {side} (not compared): " + ", ".join(comparison[key])]
    return lines


def bland_altman_plots(evaluation: Evaluation, path: str | Path) -> None:
    """bland_altman.png: per class, the difference of the predicted and reference volumes (ml) against their
    mean, with the bias and the 95% limits of agreement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = evaluation.rows()
    labels = list(evaluation.labels.items())
    columns = min(4, len(labels))
    n_rows = -(-len(labels) // columns)
    figure, axes = plt.subplots(n_rows, columns, figsize=(4.2 * columns, 3.6 * n_rows), squeeze=False,
                                constrained_layout=True)
    for axis in axes.flat[len(labels):]:
        axis.set_axis_off()
    for axis, (label, name) in zip(axes.flat, labels):
        mine = [row for row in rows if row["label"] == label]
        pred, ref = [row["pred_ml"] for row in mine], [row["ref_ml"] for row in mine]
        agreement = cohort_stats.bland_altman(pred, ref)
        pairs = [(p, r) for p, r in zip(pred, ref) if math.isfinite(p) and math.isfinite(r)]
        axis.scatter([(p + r) / 2 for p, r in pairs], [p - r for p, r in pairs], s=14, alpha=0.8)
        for value, style in ((agreement["bias"], "-"), (agreement["loa_low"], "--"), (agreement["loa_high"], "--")):
            if math.isfinite(value):
                axis.axhline(value, color="tab:red", linestyle=style, linewidth=1)
        axis.axhline(0.0, color="grey", linewidth=0.6)
        axis.set_title(f"{name}: bias {fmt(agreement['bias'], 2)} ml, LoA {fmt(agreement['loa_low'], 2)} to "
                       f"{fmt(agreement['loa_high'], 2)}", fontsize=9)
        axis.set_xlabel("mean of prediction and reference (ml)")
        axis.set_ylabel("prediction - reference (ml)")
        axis.grid(alpha=0.3)
    figure.suptitle(f"Bland-Altman, {len(evaluation.results)} cases")
    figure.savefig(path, dpi=110)
    plt.close(figure)
