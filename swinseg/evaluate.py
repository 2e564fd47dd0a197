"""Evaluation of predicted label maps against references: case matching, label names, per-case scores and
the reports (per_case.csv, summary.json, summary.md, dice_hd95.png).

The numbers come from swinseg.metrics (equal to medpy); this module reads the volumes, checks their geometry,
runs the cases (optionally in a process pool) and summarises. Library use:

    from swinseg.evaluate import evaluate, write_reports
    result = evaluate("preds/", "labelsTs/", labels={1: "liver"}, jobs=4)
    result.summary()["per_class"]["1"]["dice"]["mean"]
"""
from __future__ import annotations

import csv
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from swinseg import __version__, metrics
from swinseg.config import read_dataset_labels
from swinseg.errors import SwinsegError
from swinseg.io import atomic_output, case_name, check_same_geometry, find_images, read_volume, resample_like
from swinseg.labels import label_map, parse_labels
from swinseg.overlay import overlay_files

METRICS = ("dice", "iou", "hd95", "assd", "pred_ml", "ref_ml")
CSV_COLUMNS = (
    "case", "label", "class", "dice", "iou", "hd95", "assd", "pred_ml", "ref_ml",
    "pred_voxels", "ref_voxels", "flag", "prediction", "reference",
)  # fmt: skip
FLAGS = ("pred_empty", "ref_empty", "both_empty")
SYNAPSE_CARD = "swin_unet_tiny"  # the card that holds the Synapse class names (labels 1..8)


@dataclass(frozen=True)
class Settings:
    """How scores are computed: HD95 definition, empty-mask policy, distance unit, resampling, protocol."""

    hd95: str = "medpy"
    empty: str = "worst"
    voxel_units: bool = False
    resample_to_reference: bool = False
    protocol: str | None = None
    nsd_tolerance: float | None = None  # normalised surface Dice at this tolerance (mm, or voxels); None: no NSD

    def __post_init__(self) -> None:
        if self.nsd_tolerance is not None and not self.nsd_tolerance >= 0:
            raise SwinsegError(f"--nsd {self.nsd_tolerance}: the tolerance must be >= 0")
        for value, choices, option in (
            (self.hd95, metrics.HD95_DEFINITIONS, "--hd95"),
            (self.empty, metrics.EMPTY_POLICIES, "--empty"),
        ):
            if value not in choices:
                raise SwinsegError(f"{option}: unknown value {value!r}; choose from {', '.join(choices)}")

    @property
    def unit(self) -> str:
        return "voxels" if self.voxel_units else "mm"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The per-case metrics these settings compute (METRICS, and "nsd" with a tolerance)."""
        return METRICS + (("nsd",) if self.nsd_tolerance is not None else ())

    @classmethod
    def synapse_paper(cls, resample_to_reference: bool = False) -> Settings:
        """The Swin-Unet/TransUNet protocol: medpy HD95 in voxel units, the papers' empty-mask rules."""
        return cls("medpy", "paper", True, resample_to_reference, "synapse-paper")


@dataclass(frozen=True)
class CasePair:
    """A prediction and its reference, matched by case name."""

    name: str
    prediction: Path
    reference: Path


@dataclass
class CaseMatch:
    """Cases found in both places, and the names found on one side only."""

    cases: list[CasePair]
    missing: list[str] = field(default_factory=list)  # references without a prediction
    extra: list[str] = field(default_factory=list)  # predictions without a reference


@dataclass
class PairScores:
    """The scores of one pair, per label."""

    case: CasePair
    scores: dict[int, metrics.Scores]
    voxel_ml: float  # volume of one voxel in ml (from the reference's spacing); NaN for 2-D images


@dataclass
class Evaluation:
    """All per-case scores with the settings and inputs that produced them."""

    prediction: Path
    reference: Path
    labels: dict[int, str]
    settings: Settings
    results: list[PairScores]
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    labels_only_in_predictions: list[int] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        """One row per case and class (the columns of per_case.csv)."""
        rows = []
        for result in self.results:
            for label, name in self.labels.items():
                score = result.scores[label]
                rows.append({
                    "case": result.case.name, "label": label, "class": name,
                    "dice": score.dice, "iou": score.iou, "hd95": score.hd95, "assd": score.assd,
                    "pred_ml": score.pred_voxels * result.voxel_ml, "ref_ml": score.ref_voxels * result.voxel_ml,
                    "pred_voxels": score.pred_voxels, "ref_voxels": score.ref_voxels, "flag": score.flag,
                    "prediction": str(result.case.prediction), "reference": str(result.case.reference),
                })  # fmt: skip
                if self.settings.nsd_tolerance is not None:
                    rows[-1]["nsd"] = score.nsd
        return rows

    def summary(self, worst: int = 5) -> dict[str, Any]:
        """Means, stds, medians and counts per class, the mean over classes, definitions and inputs."""
        rows = self.rows()
        per_class: dict[str, Any] = {}
        for label, name in self.labels.items():
            mine = [row for row in rows if row["label"] == label]
            entry: dict[str, Any] = {"name": name}
            entry.update({metric: _stats([row[metric] for row in mine]) for metric in self.settings.metrics})
            entry["flags"] = {flag: sum(row["flag"] == flag for row in mine) for flag in FLAGS}
            per_class[str(label)] = entry
        over_classes = {
            metric: _mean([per_class[str(label)][metric]["mean"] for label in self.labels])
            for metric in ("dice", "iou", "hd95", "assd", *self.settings.metrics[len(METRICS):])
        }
        return {
            "swinseg_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "prediction": str(self.prediction),
            "reference": str(self.reference),
            "protocol": self.settings.protocol,
            "definitions": self.definitions(),
            "labels": {str(label): name for label, name in self.labels.items()},
            "n_cases": len(self.results),
            "cases": [
                {"case": r.case.name, "prediction": str(r.case.prediction), "reference": str(r.case.reference)}
                for r in self.results
            ],
            "missing_predictions": self.missing,
            "extra_predictions": self.extra,
            "labels_only_in_predictions": self.labels_only_in_predictions,
            "per_class": per_class,
            "mean_over_classes": over_classes,
            "worst_cases": self.worst_cases(worst, rows),
        }

    def definitions(self) -> dict[str, str]:
        unit = self.settings.unit
        nsd = {} if self.settings.nsd_tolerance is None else {
            "nsd": f"normalised surface Dice at {self.settings.nsd_tolerance:g} {unit}: share of both masks' surface "
                   "voxels within the tolerance of the other surface (MONAI compute_surface_dice, voxel surfaces); "
                   "empty masks as Dice",
        }
        return nsd | {
            "dice": "2|P∩R| / (|P|+|R|) (medpy.metric.binary.dc)",
            "iou": "|P∩R| / |P∪R| (medpy.metric.binary.jc)",
            "hd95": self.settings.hd95,
            "hd95_definition": metrics.HD95_DEFINITIONS[self.settings.hd95],
            "assd": metrics.ASSD_DEFINITION,
            "surface": "mask XOR binary erosion with connectivity 1 (as medpy)",
            "distance_unit": unit,
            "spacing": "unit spacing (--voxel-units)" if unit == "voxels" else "the reference volume's spacing",
            "volumes": "ml, from the reference volume's spacing (NaN for 2-D images)",
            "empty_policy": self.settings.empty,
            "empty_policy_definition": metrics.EMPTY_POLICIES[self.settings.empty],
            "std": "sample standard deviation (ddof=1) over cases; NaN values are left out and counted (n_nan)",
            "mean_over_classes": "mean over cases per class, then mean of the class means",
        }

    def worst_cases(self, count: int = 5, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
        """The `count` case/class rows with the lowest Dice (then highest HD95)."""
        rows = self.rows() if rows is None else rows
        ranked = sorted(
            (row for row in rows if not math.isnan(row["dice"])),
            key=lambda row: (row["dice"], -(row["hd95"] if not math.isnan(row["hd95"]) else -math.inf)),
        )
        keep = ("case", "label", "class", "dice", "hd95", "pred_ml", "ref_ml", "flag")
        return [{key: row[key] for key in keep} for row in ranked[:count]]


# ---------------------------------------------------------------------------------------------- cases


def match_cases(prediction: str | Path, reference: str | Path) -> CaseMatch:
    """Pair prediction and reference files: two files, or two folders matched by case name.

    A name matches as is, or with nnU-Net's channel suffix (`CASE_0000`) removed on either side.
    """
    prediction, reference = Path(prediction), Path(reference)
    for path, what in ((prediction, "prediction"), (reference, "reference")):
        if not path.exists():
            raise SwinsegError(f"{path}: {what} not found")
    if prediction.is_file() and reference.is_file():
        return CaseMatch([CasePair(case_name(reference, strip_channel=True), prediction, reference)])
    if prediction.is_file() or reference.is_file():
        raise SwinsegError(f"give two files or two folders, not a mix ({prediction}, {reference})")
    preds = _names(find_images(prediction), prediction)
    refs = _names(find_images(reference), reference)
    if not refs:
        raise SwinsegError(f"{reference}: no reference images found")
    pred_keys = _match_keys(preds, refs)
    ref_keys = _match_keys(refs, preds)
    matched = sorted(set(pred_keys.values()) & set(ref_keys.values()))
    by_key_pred = {key: name for name, key in pred_keys.items()}
    by_key_ref = {key: name for name, key in ref_keys.items()}
    cases = [CasePair(key, preds[by_key_pred[key]], refs[by_key_ref[key]]) for key in matched]
    missing = sorted(name for name, key in ref_keys.items() if key not in by_key_pred)
    extra = sorted(name for name, key in pred_keys.items() if key not in by_key_ref)
    return CaseMatch(cases, missing, extra)


def _names(paths: list[Path], folder: Path) -> dict[str, Path]:
    names: dict[str, Path] = {}
    for path in paths:
        name = case_name(path)
        if name in names:
            raise SwinsegError(f"{folder}: two images for case {name!r} ({names[name].name}, {path.name})")
        names[name] = path
    return names


def _match_keys(side: dict[str, Path], other: dict[str, Path]) -> dict[str, str]:
    """CasePair key of each name: the name itself if the other side has it, else the name without `_0000`."""
    other_keys = set(other) | {case_name(name, strip_channel=True) for name in other}
    keys = {}
    for name in side:
        stripped = case_name(name, strip_channel=True)
        keys[name] = name if name in other or stripped not in other_keys else stripped
    seen: dict[str, str] = {}
    for name, key in keys.items():
        if key in seen:
            raise SwinsegError(f"case names {seen[key]!r} and {name!r} both match case {key!r}")
        seen[key] = name
    return keys


# ---------------------------------------------------------------------------------------------- labels


def dataset_json_labels(path: str | Path) -> dict[int, str]:
    """Foreground labels {id: name} from an nnU-Net dataset.json (v2 name -> id, or v1/MSD id -> name)."""
    return {label: name for label, name in read_dataset_labels(path).items() if label > 0}


def card_labels(card: str) -> dict[int, str]:
    """Foreground labels {id: name} of a stored model's or a model card's classes (class index = label id)."""
    from swinseg.store import model_card

    return {i: name for i, name in enumerate(model_card(card).classes) if i > 0}


def resolve_labels(
    labels: Sequence[str] | None = None, card: str | None = None, dataset_json: str | Path | None = None
) -> dict[int, str] | None:
    """The labels to evaluate with names, from --labels / a card / a dataset.json; None = every label present
    in the references. Ids from --labels take their names from the card or dataset.json when not named."""
    if card and dataset_json:
        raise SwinsegError("give --model or --dataset-json for label names, not both")
    named = card_labels(card) if card else dataset_json_labels(dataset_json) if dataset_json else None
    if not labels:
        return named
    chosen = parse_labels(labels)
    return {label: name or (named or {}).get(label) or f"label_{label}" for label, name in chosen.items()}


# ---------------------------------------------------------------------------------------------- running


def evaluate_case(case: CasePair, labels: Sequence[int] | None, settings: Settings) -> PairScores:
    """Read one prediction/reference pair, check geometry (or resample) and score `labels` (None: every
    label present in either map)."""
    pred, ref = read_volume(case.prediction), read_volume(case.reference, dataset="label")
    try:
        check_same_geometry(pred, ref)
    except SwinsegError as error:
        if not settings.resample_to_reference:
            raise SwinsegError(f"{error} (use --resample-to-reference to resample the prediction)") from error
        pred = resample_like(pred, ref)
    pred_labels = label_map(pred.array, case.prediction)
    ref_labels = label_map(ref.array, case.reference)
    spacing = None if settings.voxel_units else ref.spacing
    scores = metrics.score_labels(pred_labels, ref_labels, labels, spacing, hd95=settings.hd95, empty=settings.empty,
                                  nsd_tolerance=settings.nsd_tolerance)
    voxel_ml = metrics.volume_ml(1, ref.spacing) if ref.ndim == 3 else math.nan  # a 2-D image has no volume
    return PairScores(case, scores, voxel_ml)


def evaluate(
    prediction: str | Path,
    reference: str | Path,
    *,
    labels: dict[int, str] | None = None,
    settings: Settings | None = None,
    jobs: int = 1,
    progress: Callable[[int, int, PairScores | None], None] | None = None,
) -> Evaluation:
    """Score every matched case; `labels` None = every non-zero label present in the references.

    `jobs` > 1 runs cases in that many processes (0 = one per CPU core). `progress(done, total, result)` is
    called once before the first case (result None) and after each case.
    """
    settings = settings or Settings()
    match = match_cases(prediction, reference)
    if not match.cases:
        raise SwinsegError(
            f"no case names match between {prediction} and {reference} "
            f"(references: {preview(match.missing)}; predictions: {preview(match.extra)})"
        )
    wanted = sorted(labels) if labels is not None else None
    if progress:
        progress(0, len(match.cases), None)
    results = _run(match.cases, wanted, settings, jobs, progress)
    results.sort(key=lambda result: result.case.name)
    only_in_predictions: list[int] = []
    if labels is None:
        in_refs = sorted({label for r in results for label, s in r.scores.items() if s.ref_voxels})
        in_preds = {label for r in results for label, s in r.scores.items() if s.pred_voxels}
        only_in_predictions = sorted(in_preds - set(in_refs))
        labels = {label: f"label_{label}" for label in in_refs}
        if not labels:
            raise SwinsegError(f"{reference}: the references contain no foreground label; give --labels")
        for result in results:
            for label in labels:
                if label not in result.scores:  # absent from both maps of this case
                    result.scores[label] = metrics.empty_scores(0, 0, settings.empty, 0.0)
    return Evaluation(
        Path(prediction), Path(reference), dict(sorted(labels.items())), settings, results,
        match.missing, match.extra, only_in_predictions,
    )  # fmt: skip


def _run(
    cases: list[CasePair],
    labels: list[int] | None,
    settings: Settings,
    jobs: int,
    progress: Callable[[int, int, PairScores | None], None] | None,
) -> list[PairScores]:
    jobs = (os.cpu_count() or 1) if jobs <= 0 else jobs
    jobs = min(jobs, len(cases))
    results = []
    if jobs == 1:
        for case in cases:
            results.append(evaluate_case(case, labels, settings))
            if progress:
                progress(len(results), len(cases), results[-1])
        return results
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(evaluate_case, case, labels, settings) for case in cases]
        try:
            for future in as_completed(futures):
                results.append(future.result())
                if progress:
                    progress(len(results), len(cases), results[-1])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def preview(names: list[str], count: int = 5) -> str:
    return ", ".join(names[:count]) + (f" ... ({len(names)} in all)" if len(names) > count else "") or "none"


def _finite(values: Iterable[float]) -> list[float]:
    return [float(v) for v in values if not math.isnan(float(v))]


def _mean(values: Iterable[float]) -> float:
    finite = _finite(values)
    return float(np.mean(finite)) if finite else math.nan


def _stats(values: list[float]) -> dict[str, float | int]:
    finite = np.asarray(_finite(values), dtype=np.float64)
    n = int(finite.size)
    return {
        "mean": float(finite.mean()) if n else math.nan,
        "std": float(finite.std(ddof=1)) if n > 1 else math.nan,
        "median": float(np.median(finite)) if n else math.nan,
        "min": float(finite.min()) if n else math.nan,
        "max": float(finite.max()) if n else math.nan,
        "n": n,
        "n_nan": len(values) - n,
    }


# ---------------------------------------------------------------------------------------------- reports


def write_reports(evaluation: Evaluation, folder: str | Path, summary: dict[str, Any] | None = None) -> list[Path]:
    """Write per_case.csv, summary.json, summary.md and dice_hd95.png into `folder` (each atomically);
    `summary`: the evaluation's summary if already computed."""
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
        data = [_finite(row[metric] for row in rows if row["label"] == label) for label in evaluation.labels]
        axis.boxplot([values or [math.nan] for values in data], showmeans=True)
        axis.set_xticks(range(1, len(names) + 1), names, rotation=45, ha="right")
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    figure.suptitle(f"{len(evaluation.results)} cases, empty policy '{evaluation.settings.empty}'")
    figure.savefig(path, dpi=120)
    plt.close(figure)
