"""Per-case quality control of a prediction: is this mask likely good, worth a look, or likely wrong?

Signals, each turned into a score in [0, 1] by a ramp (1 up to its `ok` limit, falling linearly to its floor at
its `bad` limit; see THRESHOLDS):

- input plausibility against the model card's fingerprint (cards without one skip these): the scan's darkest
  voxels (p0.5: air for CT) and its p99.5 against the training scans', relative to the training scans' range
  (rescaled intensities, another modality); the mean intensity under the predicted foreground against the
  training foreground (in training standard deviations); in-plane spacing, slice thickness and field of view
  against the training range (a factor beyond it); classes found in nearly every training case but empty here,
  and class volumes far from the training cases' typical volume;
- prediction confidence: the mean softmax entropy (divided by log C) over the predicted foreground; the
  estimated Dice between TTA flips or ensemble members and their consensus (`Agreement`; mean of the classes),
  where they ran; the
  share of each class outside its largest connected components (speckle); classes touching an in-plane edge.

The score is the product of the signal scores (so one bad signal is enough, and several doubtful ones add up).
Verdict: "fail" when the score is below FAIL_BELOW or nothing at all was segmented, "review" below OK_FROM,
else "ok". Reasons: one sentence per signal that scored below 1.
"""
from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swinseg import io
from swinseg.fingerprint import percentiles
from swinseg.orientation import layout

OK_FROM = 0.7  # score at or above: ok
FAIL_BELOW = 0.3  # score below: fail
SAMPLED = 200_000  # scan voxels sampled for its percentiles
# signal -> (ok limit, bad limit, floor): the score is 1 up to `ok`, `floor` from `bad` on, linear between. The
# entropy, agreement and class-volume limits were set on benchmarks/qc.py (README, "Quality control"), the others by
# judgement.
THRESHOLDS: dict[str, tuple[float, float, float]] = {
    "air_level": (0.1, 0.3, 0.0),  # |scan p0.5 - training p0.5| / training scan p0.5..p99.5 range
    "bright_level": (0.25, 0.6, 0.2),  # |scan p99.5 - training p99.5| / the same range
    "foreground_intensity": (1.5, 4.0, 0.1),  # |mean under the mask - training foreground mean| / its sd
    "spacing": (1.25, 3.0, 0.5),  # factor outside the training range of in-plane spacing and slice thickness
    "field_of_view": (1.25, 3.0, 0.5),  # factor outside the training range of the extent along each axis (mm)
    "missing_classes": (0.0, 1.0, 0.2),  # share of the classes of nearly every training case that are empty
    "class_volume": (0.75, 1.5, 0.3),  # |log10(volume / the training cases' typical volume)|, worst class
    "entropy": (0.5, 0.8, 0.0),  # mean normalised softmax entropy over the predicted foreground
    "agreement": (-0.5, -0.2, 0.0),  # minus the mean over classes of the estimated Dice between members
    "fragments": (0.05, 0.3, 0.2),  # share of the foreground outside each class's largest components
    "touches_border": (0.0, 1.0, 0.8),  # classes touching an in-plane edge of the scan
}
COMMON_CLASS = 0.9  # a class in at least this share of the training cases is expected in every scan


@dataclass
class Agreement:
    """Confusion counts between each member's labels (a TTA flip, an ensemble model) and their consensus, for
    an estimated Dice per class: 2 |member & consensus| / (|member| + |consensus|), pooled over the members."""

    num_classes: int
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def add(self, member: Any, consensus: Any) -> None:
        """Count one member's labels against the consensus (numpy arrays or torch tensors, same shape)."""
        n = self.num_classes
        if hasattr(member, "cpu"):  # torch tensors: counted on their device
            pairs = member.reshape(-1).long() * n + consensus.reshape(-1).long()
            found = pairs.bincount(minlength=n * n).cpu().numpy()
        else:
            found = np.bincount(np.asarray(member).reshape(-1).astype(np.int64) * n
                                + np.asarray(consensus).reshape(-1), minlength=n * n)
        self.counts += found.reshape(self.num_classes, self.num_classes)

    def dice(self) -> dict[int, float]:
        """Estimated Dice per foreground class that the members or the consensus predicted."""
        sizes = self.counts.sum(axis=1) + self.counts.sum(axis=0)
        return {k: float(2 * self.counts[k, k] / sizes[k]) for k in range(1, self.num_classes) if sizes[k]}


@dataclass(frozen=True)
class QualityControl:
    """A case's verdict ("ok", "review" or "fail"), score in [0, 1] (higher: more likely a good mask), one
    sentence per doubtful signal, and the signals measured."""

    verdict: str
    score: float
    reasons: tuple[str, ...]
    signals: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "score": round(self.score, 4), "reasons": list(self.reasons),
                "signals": self.signals}


def ramp(value: float, name: str) -> float:
    """The score of one signal's value (THRESHOLDS)."""
    ok, bad, floor = THRESHOLDS[name]
    progress = (value - ok) / (bad - ok)
    return float(1.0 - (1.0 - floor) * min(max(progress, 0.0), 1.0))


def entropy(probabilities: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean softmax entropy divided by log C over the voxels labelled foreground (None without any)."""
    inside = np.asarray(labels) > 0
    if not inside.any():
        return None
    p = np.asarray(probabilities)[:, inside].astype(np.float32)
    h = -(p * np.log(np.clip(p, 1e-6, 1.0))).sum(axis=0)
    return float(h.mean() / math.log(p.shape[0]))


def fragments(labels: np.ndarray, expected: dict[int, int]) -> tuple[float, dict[int, int]]:
    """Share of the foreground outside each class's `expected` largest components (1 where not given), and the
    component count per class."""
    from scipy import ndimage

    labels = np.asarray(labels)
    present = [int(k) for k in np.unique(labels) if k > 0]
    if not present:
        return 0.0, {}
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False), max_label=max(present))
    outside, total, counts = 0, 0, {}
    for k in present:
        components, n = ndimage.label(labels[boxes[k - 1]] == k)
        sizes = np.sort(np.bincount(components.reshape(-1))[1:])[::-1]
        counts[k] = int(n)
        outside += int(sizes[expected.get(k, 1):].sum())
        total += int(sizes.sum())
    return outside / total, counts


def in_plane_edges(labels: np.ndarray, axis: int, names: Sequence[str]) -> list[str]:
    """Classes with a voxel on an edge of the slices (the faces along `axis`, the slice axis, do not count: a
    structure running past the first or last slice is usual)."""
    labels = np.asarray(labels)
    touching: set[int] = set()
    for a in range(labels.ndim):
        if a != axis or labels.ndim == 2:
            for end in (0, labels.shape[a] - 1):
                touching.update(int(k) for k in np.unique(np.take(labels, end, axis=a)) if k > 0)
    return [names[k] if k < len(names) else f"label_{k}" for k in sorted(touching)]


def scan_axis(volume: io.Volume, orientation: str, plane: str) -> int:
    """The scan's array axis that a model sliced in `plane` (after orienting to `orientation`) steps along."""
    axis = layout(volume, orientation, plane).scan_slice_axis
    return -1 if axis is None else axis


def _factor_outside(value: float, low: float, high: float) -> float:
    """1 inside [low, high], else how many times beyond the nearer end."""
    if value <= 0 or low <= 0:
        return 1.0
    return max(1.0, low / value, value / high)


def measure(volume: io.Volume, labels: np.ndarray, probabilities: np.ndarray | None, card: Any, *,
            plane: str | None = None, agreement: Agreement | None = None) -> dict[str, Any]:
    """The signals of one case: `labels` (and softmax `probabilities` (C, ...)) in the scan's array order;
    `card` the model card (its fingerprint, when it has one, gives the training ranges)."""
    names = card.classes
    array = np.asarray(volume.array)
    prep = card.preprocessing
    axis = scan_axis(volume, prep.orientation, plane or prep.plane)
    counts = np.bincount(np.asarray(labels).reshape(-1), minlength=len(names))
    voxel_mm3 = float(np.prod(volume.spacing))
    signals: dict[str, Any] = {
        "foreground_voxels": int(counts[1:].sum()),
        "class_ml": {names[k]: round(float(counts[k]) * voxel_mm3 / 1000, 3) for k in range(1, len(names))},
        "touches_border": in_plane_edges(labels, axis, names),
    }
    flat = array.reshape(-1)
    sample = flat if flat.size <= SAMPLED else flat[np.random.default_rng(0).integers(0, flat.size, SAMPLED)]
    signals["scan_percentiles"] = percentiles(sample.astype(np.float64))
    foreground = np.asarray(labels) > 0
    if foreground.any():
        signals["foreground_mean"] = float(array[foreground].astype(np.float64).mean())
    if probabilities is not None:
        signals["entropy"] = entropy(probabilities, labels)
    if agreement is not None:
        signals["agreement_dice"] = {names[k]: round(d, 4) for k, d in agreement.dice().items()}
    fingerprint = getattr(card, "fingerprint", None) or {}
    expected = {int(c["label"]): max(1, round(c["objects"] / c["cases"])) for c in fingerprint.get("classes", ())
                if c.get("cases")}
    signals["fragment_share"], components = fragments(labels, expected)
    signals["components"] = {names[k]: n for k, n in components.items()}
    if volume.ndim == 3 and volume.spacing_known and axis >= 0:
        rows = [a for a in range(3) if a != axis]
        signals["thickness_mm"] = float(volume.spacing[axis])
        signals["in_plane_mm"] = [float(volume.spacing[a]) for a in rows]
        signals["extent_mm"] = [float(volume.spacing[a] * array.shape[a]) for a in (axis, *rows)]
    return signals


def assess(signals: dict[str, Any], fingerprint: dict[str, Any] | None) -> QualityControl:
    """Scores, verdict and reasons from `measure`'s signals and the card's fingerprint (None: the signals that
    need no training ranges only)."""
    scores: dict[str, float] = {}
    reasons: list[str] = []

    def judge(name: str, value: float, reason: str) -> None:
        scores[name] = ramp(value, name)
        if scores[name] < 1.0:
            reasons.append(reason)

    if signals["foreground_voxels"] == 0:
        return QualityControl("fail", 0.0, ("nothing was segmented: every class is empty",), signals)
    found = fingerprint or {}
    channel = (found.get("channels") or [{}])[0]
    scan, train_scan = signals["scan_percentiles"], channel.get("scan")
    if train_scan:
        spread = max(train_scan["p99.5"] - train_scan["p0.5"], 1e-6)
        judge("air_level", abs(scan["p0.5"] - train_scan["p0.5"]) / spread,
              f"darkest voxels (p0.5) at {scan['p0.5']:.4g}, {train_scan['p0.5']:.4g} in training: intensities "
              "rescaled, another modality, or no air in the field of view")
        judge("bright_level", abs(scan["p99.5"] - train_scan["p99.5"]) / spread,
              f"brightest voxels (p99.5) at {scan['p99.5']:.4g}, {train_scan['p99.5']:.4g} in training")
    train_fg = channel.get("foreground")
    if train_fg and "foreground_mean" in signals:
        z = abs(signals["foreground_mean"] - train_fg["mean"]) / max(train_fg["sd"], 1e-6)
        judge("foreground_intensity", z, f"mean intensity under the mask {signals['foreground_mean']:.4g}, "
              f"{train_fg['mean']:.4g} (sd {train_fg['sd']:.3g}) in training")
    if found.get("spacings") and "thickness_mm" in signals:
        spacings, shapes = np.asarray(found["spacings"], float), np.asarray(found["shapes"], float)
        extents = spacings * shapes
        thickness = _factor_outside(signals["thickness_mm"], spacings[:, 0].min(), spacings[:, 0].max())
        in_plane = max(_factor_outside(s, spacings[:, 1:].min(), spacings[:, 1:].max())
                       for s in signals["in_plane_mm"])
        judge("spacing", max(thickness, in_plane),
              f"spacing {signals['thickness_mm']:.3g} mm slices, "
              f"{'x'.join(f'{s:.3g}' for s in signals['in_plane_mm'])} mm in-plane: outside the training range "
              f"({spacings[:, 0].min():.3g}-{spacings[:, 0].max():.3g} mm slices, "
              f"{spacings[:, 1:].min():.3g}-{spacings[:, 1:].max():.3g} mm in-plane)")
        extent = signals["extent_mm"]
        factor = max(_factor_outside(extent[0], extents[:, 0].min(), extents[:, 0].max()),
                     *(_factor_outside(e, extents[:, 1:].min(), extents[:, 1:].max()) for e in extent[1:]))
        judge("field_of_view", factor, f"field of view {'x'.join(f'{e:.0f}' for e in extent)} mm is outside the "
              f"training range ({extents[:, 0].min():.0f}-{extents[:, 0].max():.0f} mm along the slices, "
              f"{extents[:, 1:].min():.0f}-{extents[:, 1:].max():.0f} mm in-plane)")
    classes = [c for c in found.get("classes", ()) if c.get("cases")]
    if classes:
        common = [c["name"] for c in classes if c["cases"] >= COMMON_CLASS * len(found.get("cases", ()) or [0])]
        missing = [name for name in common if not signals["class_ml"].get(name)]
        judge("missing_classes", len(missing) / max(len(common), 1),
              f"empty, though in nearly every training case: {', '.join(missing)}")
        worst, worst_name = 0.0, ""
        for c in classes:
            typical_ml = c.get("median_case_ml") or _object_estimate_ml(c)
            ml = signals["class_ml"].get(c["name"], 0.0)
            if ml > 0 and typical_ml > 0 and abs(math.log10(ml / typical_ml)) > worst:
                worst, worst_name = abs(math.log10(ml / typical_ml)), f"{c['name']} {ml:.3g} ml vs {typical_ml:.3g} ml"
        judge("class_volume", worst, f"class volume far from the training cases: {worst_name}")
    if signals.get("entropy") is not None:
        judge("entropy", signals["entropy"], f"uncertain: mean softmax entropy {signals['entropy']:.2f} (of 1) "
              "inside the mask")
    if signals.get("agreement_dice"):
        estimated = float(np.mean(list(signals["agreement_dice"].values())))
        name, worst = min(signals["agreement_dice"].items(), key=lambda item: item[1])
        judge("agreement", -estimated, f"TTA flips / ensemble models disagree: estimated Dice {estimated:.2f} "
              f"(mean of the classes; {name} {worst:.2f})")
    judge("fragments", signals["fragment_share"],
          f"{signals['fragment_share']:.0%} of the mask lies outside the main connected components")
    judge("touches_border", min(len(signals["touches_border"]), 1),
          f"touching the edge of the slices (cut off by the field of view?): {', '.join(signals['touches_border'])}")
    score = float(np.prod(list(scores.values())))
    signals = {**signals, "scores": {name: round(value, 4) for name, value in scores.items()}}
    verdict = "fail" if score < FAIL_BELOW else "review" if score < OK_FROM else "ok"
    return QualityControl(verdict, score, tuple(reasons), signals)


def _object_estimate_ml(entry: dict[str, Any]) -> float:
    """A class's typical volume per case in ml from a fingerprint made before cards kept `median_case_ml` (median
    object volume x objects per case: far too small where the labels have many specks)."""
    return (entry.get("median_object_mm3") or 0.0) * entry["objects"] / entry["cases"] / 1000


def check(volume: io.Volume, labels: np.ndarray, probabilities: np.ndarray | None, card: Any, *,
          plane: str | None = None, agreement: Agreement | None = None) -> QualityControl:
    """measure, then assess: one case's quality control."""
    signals = measure(volume, labels, probabilities, card, plane=plane, agreement=agreement)
    return assess(signals, getattr(card, "fingerprint", None))


VERDICT_ORDER = {"fail": 0, "review": 1, "ok": 2}


def worst_first(rows: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(case, qc block) pairs: fail, then review, then ok; lower scores first within each."""
    return sorted(rows.items(), key=lambda item: (VERDICT_ORDER.get(item[1].get("verdict"), 3),
                                                  item[1].get("score", 1.0), item[0]))


def write_qc_csv(path: str | Path, rows: dict[str, dict[str, Any]]) -> None:
    """case, verdict, score, reasons (joined by "; "), worst first (atomically)."""
    with io.atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("case", "verdict", "score", "reasons"))
        for case, block in worst_first(rows):
            writer.writerow((case, block.get("verdict"), f"{block.get('score', 0.0):.4f}",
                             "; ".join(block.get("reasons", ()))))
