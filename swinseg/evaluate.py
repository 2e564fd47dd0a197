"""Evaluation of predicted label maps against references: case matching, label names, per-case scores and
their summary (the report files are written by swinseg.evaluate_report).

The numbers come from swinseg.metrics (equal to medpy); this module reads the volumes, checks their geometry,
runs the cases (optionally in a process pool) and summarises, with bootstrap confidence intervals and volume
agreement from swinseg.cohort_stats. Library use:

    from swinseg.evaluate import evaluate
    from swinseg.evaluate_report import write_reports
    result = evaluate("preds/", "labelsTs/", labels={1: "liver"}, jobs=4)
    result.summary()["per_class"]["1"]["dice"]["mean"]
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from swinseg import __version__, cohort_stats, metrics
from swinseg.config import read_dataset_labels
from swinseg.defaults import usable_cores
from swinseg.errors import SwinsegError
from swinseg.io import case_name, check_same_geometry, find_images, read_volume, resample_like
from swinseg.labels import label_map, parse_labels

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

    def summary(self, worst: int = 5, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
        """Means, stds, medians and counts per class, the mean over classes, definitions and inputs; with
        `bootstrap` > 0 also "statistics": bootstrap CIs of the means (that many resamples, numpy generator
        seeded with `seed`) and the volume agreement per class (swinseg.cohort_stats)."""
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
        summary: dict[str, Any] = {
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
        if bootstrap:
            summary["statistics"] = cohort_stats.evaluation_statistics(self, bootstrap, seed)
        return summary

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
    jobs = usable_cores() if jobs <= 0 else jobs
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
