"""What a model was trained on, measured once from its training cases: spacing and size per case, intensities
of the foreground and of the whole scan (the air level for CT), class shares, object counts and sizes. The planner
decides from it; the model card and checkpoint keep it, so predict can compare new scans with it."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from swinseg.errors import SwinsegError

if TYPE_CHECKING:
    from swinseg.training.samples import LoadedCase

SAMPLED_VOXELS = 100_000  # intensities sampled per case (nnU-Net's fingerprint samples 10k per case and class)
PERCENTILES = (0.5, 50.0, 99.5)


@dataclass(frozen=True)
class Fingerprint:
    """What the training cases are: per case spacing (slice axis, rows, columns; mm) and shape in the layout
    training slices them; per channel the intensity statistics of the foreground (labels > 0: mean, sd,
    0.5/50/99.5 percentiles) and of the whole scan (0.5/50/99.5 percentiles: the air level for CT), from up
    to SAMPLED_VOXELS voxels a case drawn with `seed`; per foreground class its share of the foreground
    voxels, the cases that contain it and the median volume of its connected objects (mm^3)."""

    cases: tuple[str, ...]
    spacings: tuple[tuple[float, float, float], ...]
    shapes: tuple[tuple[int, int, int], ...]
    channels: tuple[dict[str, Any], ...]  # {"index", "name", "foreground": stats or None, "scan": percentiles}
    classes: tuple[dict[str, Any], ...]  # {"label", "name", "share", "cases", "objects", "median_object_mm3"}
    seed: int

    @property
    def num_cases(self) -> int:
        return len(self.cases)

    @property
    def channel_name(self) -> str | None:
        return self.channels[0]["name"]

    @property
    def foreground(self) -> dict[str, float] | None:
        """Channel 0's foreground intensity statistics (None when no case has a labelled voxel)."""
        return self.channels[0]["foreground"]

    @property
    def median_spacing(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.median(np.asarray(self.spacings), axis=0))

    @property
    def median_shape(self) -> tuple[float, ...]:
        return tuple(float(v) for v in np.median(np.asarray(self.shapes), axis=0))

    def summary(self) -> dict[str, Any]:
        """Median, min and max spacing and shape (per axis)."""
        spacings, shapes = np.asarray(self.spacings, dtype=np.float64), np.asarray(self.shapes)
        return {"num_cases": self.num_cases,
                "median_spacing": list(self.median_spacing), "min_spacing": spacings.min(axis=0).tolist(),
                "max_spacing": spacings.max(axis=0).tolist(), "median_shape": list(self.median_shape),
                "min_shape": shapes.min(axis=0).tolist(), "max_shape": shapes.max(axis=0).tolist()}

    def to_dict(self) -> dict[str, Any]:
        """The summary, then every field (JSON types)."""
        return {**self.summary(), "cases": list(self.cases), "spacings": [list(s) for s in self.spacings],
                "shapes": [list(s) for s in self.shapes], "channels": list(self.channels),
                "classes": list(self.classes), "seed": self.seed}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Fingerprint:
        try:
            return cls(cases=tuple(values["cases"]), spacings=tuple(tuple(map(float, s)) for s in values["spacings"]),
                       shapes=tuple(tuple(map(int, s)) for s in values["shapes"]),
                       channels=tuple(values["channels"]), classes=tuple(values["classes"]), seed=int(values["seed"]))
        except (KeyError, TypeError, ValueError) as error:
            raise SwinsegError(f"not a swinseg dataset fingerprint ({error})") from error


def fingerprint(cases: Sequence[LoadedCase], channel_name: str | None, seed: int,
                classes: Sequence[str] | None = None, per_case: int = SAMPLED_VOXELS) -> Fingerprint:
    """The Fingerprint of loaded cases (swinseg.training.data.LoadedCase: raw intensities and labels, slice axis
    first). `classes`: names by label value (background first); labels beyond them are named label_N."""
    if not cases:
        raise SwinsegError("no training cases to fingerprint")
    foreground = sample_foreground(cases, seed, per_case)
    channel = {"index": 0, "name": channel_name, "foreground": _statistics(foreground) if foreground.size else None,
               "scan": percentiles(_sample_scans(cases, seed, per_case))}
    spacings = tuple(tuple(round(float(s), 6) for s in case.spacing) for case in cases)
    shapes = tuple(tuple(int(n) for n in case.image.shape) for case in cases)
    return Fingerprint(tuple(case.name for case in cases), spacings, shapes,  # type: ignore[arg-type]
                       (channel,), _class_statistics(cases, tuple(classes or ())), int(seed))


def sample_foreground(cases: Sequence[LoadedCase], seed: int, per_case: int = SAMPLED_VOXELS) -> np.ndarray:
    """The intensities under the labels (label > 0), up to `per_case` voxels a case drawn with `seed`,
    pooled as float64."""
    rng = np.random.default_rng(seed)
    values = []
    for case in cases:
        voxels = case.image[case.label > 0]
        if len(voxels) > per_case:
            voxels = voxels[rng.choice(len(voxels), per_case, replace=False)]
        values.append(voxels.astype(np.float64))
    return np.concatenate(values)


def _sample_scans(cases: Sequence[LoadedCase], seed: int, per_case: int) -> np.ndarray:
    """Up to `per_case` voxels of each whole image (drawn with replacement from a stream apart from the
    foreground's), pooled as float64."""
    rng = np.random.default_rng((seed, 1))
    values = []
    for case in cases:
        flat = case.image.reshape(-1)
        picks = rng.integers(0, flat.size, per_case) if flat.size > per_case else slice(None)
        values.append(flat[picks].astype(np.float64))
    return np.concatenate(values)


def percentiles(values: np.ndarray) -> dict[str, float]:
    """The fingerprint's percentiles of `values` ("p0.5", "p50", "p99.5")."""
    return {f"p{q:g}": float(v) for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def _statistics(values: np.ndarray) -> dict[str, float]:
    return {"mean": float(values.mean()), "sd": float(values.std()), **percentiles(values)}


def _class_statistics(cases: Sequence[LoadedCase], names: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    """Per foreground label: share of all foreground voxels, cases containing it, its median volume in ml over
    those cases, connected objects (face connectivity, counted inside the label's bounding box) and their median
    volume in mm^3."""
    import scipy.ndimage  # here: predict reads this module's percentiles without it
    labels = max(len(names), max(int(case.label.max(initial=0)) for case in cases) + 1)
    voxels, present = np.zeros(labels, np.int64), np.zeros(labels, np.int64)
    objects: list[list[float]] = [[] for _ in range(labels)]
    case_ml: list[list[float]] = [[] for _ in range(labels)]
    for case in cases:
        counts = np.bincount(case.label.reshape(-1), minlength=labels)
        voxels += counts
        present += counts > 0
        voxel_mm3 = float(np.prod(case.spacing))
        for value in np.flatnonzero(counts[1:]) + 1:
            case_ml[value].append(float(counts[value]) * voxel_mm3 / 1000)
        for value, box in enumerate(scipy.ndimage.find_objects(case.label), start=1):
            if box is not None:
                components, _ = scipy.ndimage.label(case.label[box] == value)
                objects[value].extend((np.bincount(components.reshape(-1))[1:] * voxel_mm3).tolist())
    foreground = int(voxels[1:].sum())
    return tuple({"label": value, "name": names[value] if value < len(names) else f"label_{value}",
                  "share": float(voxels[value] / foreground) if foreground else 0.0, "cases": int(present[value]),
                  "median_case_ml": float(np.median(case_ml[value])) if case_ml[value] else None,
                  "objects": len(objects[value]),
                  "median_object_mm3": float(np.median(objects[value])) if objects[value] else None}
                 for value in range(1, labels))
