"""Segmentation metrics: Dice, IoU, HD95, ASSD and volumes, equal to medpy bit for bit, on crops.

medpy computes surfaces and distance transforms over the whole scan, once per direction and class. Every
distance depends only on positions relative to the two masks, so the same computation on a crop holding both
masks with a one-voxel margin gives identical values while its cost follows the organ, not the scan. On top:
each surface is computed once (medpy does it twice), and distances are formed only at the surface voxels from
the feature transform, with scipy's own arithmetic. Pure numpy/scipy.

Conventions: masks are any arrays (non-zero = object), spacing is in array order (z, y, x), `None` = voxel
units. Surface = mask XOR erosion (connectivity 1), as in medpy.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from swinseg.choices import EMPTY_POLICIES, HD95_DEFINITIONS

ASSD_DEFINITION = "mean of the pooled surface distances of both directions (medpy.metric.binary.assd)"

Box = tuple[slice, ...]


@dataclass(frozen=True)
class Scores:
    """Metrics of one class in one case. `flag`: "" or pred_empty / ref_empty / both_empty."""

    dice: float
    iou: float
    hd95: float
    assd: float
    pred_voxels: int
    ref_voxels: int
    flag: str = ""
    nsd: float = math.nan  # normalised surface Dice at the tolerance asked for (NaN when none was)

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


# ---------------------------------------------------------------- single metrics (medpy-compatible API)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice coefficient 2|A∩B|/(|A|+|B|), equal to medpy.metric.binary.dc (NaN when both are empty)."""
    p, r = _as_bool(pred), _as_bool(ref)
    return _dice(np.count_nonzero(p & r), np.count_nonzero(p), np.count_nonzero(r))


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union |A∩B|/|A∪B|, equal to medpy.metric.binary.jc (NaN when both are empty)."""
    p, r = _as_bool(pred), _as_bool(ref)
    return _iou(np.count_nonzero(p & r), np.count_nonzero(p), np.count_nonzero(r))


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances (pred -> ref, ref -> pred), each in the C order of its surface voxels,
    equal to medpy's internal `__surface_distances`. ValueError when a mask is empty."""
    p, r = _as_bool(pred), _as_bool(ref)
    box_p, box_r = _bounding_box(p), _bounding_box(r)
    if box_p is None or box_r is None:
        raise ValueError("surface distances are undefined for an empty mask")
    box = _union_box(box_p, box_r, p.shape)
    return _crop_distances(p[box], r[box], _sampling(spacing, p.ndim))


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None) -> float:
    """HD95 as medpy.metric.binary.hd95: the 95th percentile of the pooled directed distances."""
    return _hd95(*surface_distances(pred, ref, spacing), "medpy")


def hd95_max(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None) -> float:
    """HD95 as MONAI/DeepMind define it: the larger of the two directed 95th percentiles."""
    return _hd95(*surface_distances(pred, ref, spacing), "max")


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Sequence[float] | float | None = None) -> float:
    """Average symmetric surface distance as medpy.metric.binary.assd (mean of the pooled distances)."""
    return _assd(*surface_distances(pred, ref, spacing))


def volume_ml(voxels: int, spacing: Sequence[float]) -> float:
    """Volume in millilitres of `voxels` voxels of `spacing` mm."""
    return float(voxels) * math.prod(float(s) for s in spacing) / 1000.0


def image_diagonal(shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """Length of the image's diagonal (extent n * spacing per axis), the worst-case distance."""
    sizes = shape if spacing is None else [n * float(s) for n, s in zip(shape, spacing)]
    return math.sqrt(sum(float(v) ** 2 for v in sizes))


# ---------------------------------------------------------------- all metrics at once


def score_masks(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: Sequence[float] | float | None = None,
    *,
    hd95: str = "medpy",
    empty: str = "worst",
    worst_distance: float | None = None,
    nsd_tolerance: float | None = None,
) -> Scores:
    """Dice, IoU, HD95 (definition `hd95`), ASSD and voxel counts of one binary class, and with
    `nsd_tolerance` (in the unit of `spacing`) the normalised surface Dice (see `nsd`).

    `empty` names the policy for empty masks (see EMPTY_POLICIES); `worst_distance` defaults to the
    image diagonal in the unit of `spacing`.
    """
    p, r = _as_bool(pred), _as_bool(ref)
    box_p, box_r = _bounding_box(p), _bounding_box(r)
    if worst_distance is None:
        worst_distance = image_diagonal(p.shape, None if spacing is None else _sampling(spacing, p.ndim))
    if box_p is None or box_r is None:
        return empty_scores(np.count_nonzero(p), np.count_nonzero(r), empty, worst_distance, nsd_tolerance)
    box = _union_box(box_p, box_r, p.shape)
    return _score_crop(p[box], r[box], _sampling(spacing, p.ndim), hd95, nsd_tolerance)


def score_labels(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Sequence[int] | None = None,
    spacing: Sequence[float] | float | None = None,
    *,
    hd95: str = "medpy",
    empty: str = "worst",
    worst_distance: float | None = None,
    nsd_tolerance: float | None = None,
) -> dict[int, Scores]:
    """Scores of each label id in `labels` (None: every non-zero label present in either map) between two
    label maps of the same shape.

    One pass over each map finds every label's bounding box; each class is then scored on its own crop.
    """
    pred, ref = _as_labels(pred, "prediction"), _as_labels(ref, "reference")
    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: {pred.shape} vs {ref.shape}")
    _check_choice(hd95, HD95_DEFINITIONS, "hd95")
    _check_choice(empty, EMPTY_POLICIES, "empty")
    sampling = _sampling(spacing, ref.ndim)
    if worst_distance is None:
        worst_distance = image_diagonal(ref.shape, sampling)
    boxes_p, boxes_r = _label_boxes(pred), _label_boxes(ref)
    if labels is None:
        labels = sorted(set(boxes_p) | set(boxes_r))
    scores: dict[int, Scores] = {}
    for label in labels:
        box_p, box_r = boxes_p.get(int(label)), boxes_r.get(int(label))
        if box_p is None or box_r is None:
            n_pred = np.count_nonzero(pred[box_p] == label) if box_p else 0
            n_ref = np.count_nonzero(ref[box_r] == label) if box_r else 0
            scores[int(label)] = empty_scores(n_pred, n_ref, empty, worst_distance, nsd_tolerance)
            continue
        box = _union_box(box_p, box_r, ref.shape)
        scores[int(label)] = _score_crop(pred[box] == label, ref[box] == label, sampling, hd95, nsd_tolerance)
    return scores


def empty_scores(n_pred: int, n_ref: int, policy: str, worst_distance: float,
                 nsd_tolerance: float | None = None) -> Scores:
    """Scores when at least one mask is empty, by policy (see EMPTY_POLICIES); `worst_distance` is used by
    the "worst" policy when exactly one mask is empty. NSD (when a tolerance is given) follows Dice."""
    _check_choice(policy, EMPTY_POLICIES, "empty")
    flag = "both_empty" if not (n_pred or n_ref) else ("pred_empty" if not n_pred else "ref_empty")
    nan = float("nan")
    if policy == "worst":
        values = (1.0, 1.0, 0.0, 0.0) if flag == "both_empty" else (0.0, 0.0, worst_distance, worst_distance)
    elif policy == "nan":
        values = (nan, nan, nan, nan) if flag == "both_empty" else (0.0, 0.0, nan, nan)
    else:  # paper
        values = (1.0, 1.0, 0.0, 0.0) if flag == "ref_empty" else (0.0, 0.0, 0.0, 0.0)
    nsd = values[0] if nsd_tolerance is not None else nan
    return Scores(*(float(v) for v in values), pred_voxels=int(n_pred), ref_voxels=int(n_ref), flag=flag,
                  nsd=float(nsd))


# ---------------------------------------------------------------- internals


def _score_crop(p: np.ndarray, r: np.ndarray, sampling: np.ndarray | None, definition: str,
                nsd_tolerance: float | None = None) -> Scores:
    """All scores of two non-empty boolean masks on a crop that holds both with a margin."""
    _check_choice(definition, HD95_DEFINITIONS, "hd95")
    inter, n_pred, n_ref = np.count_nonzero(p & r), np.count_nonzero(p), np.count_nonzero(r)
    to_ref, to_pred = _crop_distances(p, r, sampling)
    return Scores(
        dice=_dice(inter, n_pred, n_ref),
        iou=_iou(inter, n_pred, n_ref),
        hd95=_hd95(to_ref, to_pred, definition),
        assd=_assd(to_ref, to_pred),
        pred_voxels=int(n_pred),
        ref_voxels=int(n_ref),
        nsd=math.nan if nsd_tolerance is None else _nsd(to_ref, to_pred, nsd_tolerance),
    )


def nsd(pred: np.ndarray, ref: np.ndarray, tolerance: float, spacing: Sequence[float] | float | None = None) -> float:
    """Normalised surface Dice at `tolerance` (unit of `spacing`): the share of both masks' surface voxels
    (medpy's surfaces, as for HD95) that lie within `tolerance` of the other mask's surface, as MONAI's
    compute_surface_dice counts it (surface voxels, not sub-voxel surfels). ValueError when a mask is empty."""
    return _nsd(*surface_distances(pred, ref, spacing), tolerance)


def _nsd(to_ref: np.ndarray, to_pred: np.ndarray, tolerance: float) -> float:
    within = np.count_nonzero(to_ref <= tolerance) + np.count_nonzero(to_pred <= tolerance)
    return float(within) / float(to_ref.size + to_pred.size)


def _crop_distances(p: np.ndarray, r: np.ndarray, sampling: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances between the surfaces of two non-empty masks (pred -> ref, ref -> pred)."""
    footprint = ndimage.generate_binary_structure(p.ndim, 1)
    # border_value=0: outside the array is background, as in medpy's full-array erosion; the crop margin
    # keeps every object voxel's neighbourhood inside the crop elsewhere.
    surface_p = p ^ ndimage.binary_erosion(p, structure=footprint, border_value=0)
    surface_r = r ^ ndimage.binary_erosion(r, structure=footprint, border_value=0)
    return _directed(surface_p, surface_r, sampling), _directed(surface_r, surface_p, sampling)


def _directed(query: np.ndarray, target: np.ndarray, sampling: np.ndarray | None) -> np.ndarray:
    """Distance from each `query` voxel (C order) to the nearest `target` voxel.

    Same numbers as `distance_transform_edt(~target, sampling)[query]`: the feature transform of the crop,
    then scipy's own formula (integer offsets, times spacing, squared, summed over axes in order, sqrt) at
    the query voxels only.
    """
    nearest = ndimage.distance_transform_edt(
        ~target, sampling=sampling, return_distances=False, return_indices=True
    )
    points = np.nonzero(query)
    offsets = np.empty((len(points), points[0].size), dtype=np.float64)
    for axis, coords in enumerate(points):
        offsets[axis] = nearest[axis][points] - coords
        if sampling is not None:
            offsets[axis] *= sampling[axis]
    np.multiply(offsets, offsets, offsets)
    return np.sqrt(np.add.reduce(offsets, axis=0))


def _hd95(to_ref: np.ndarray, to_pred: np.ndarray, definition: str) -> float:
    if definition == "medpy":
        return float(np.percentile(np.hstack((to_ref, to_pred)), 95))
    if definition == "max":
        return float(max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)))
    _check_choice(definition, HD95_DEFINITIONS, "hd95")
    raise AssertionError("unreachable")


def _assd(to_ref: np.ndarray, to_pred: np.ndarray) -> float:
    return float(np.concatenate([to_ref, to_pred]).mean())


def _dice(inter: int, n_pred: int, n_ref: int) -> float:
    total = int(n_pred) + int(n_ref)
    return 2.0 * int(inter) / float(total) if total else float("nan")


def _iou(inter: int, n_pred: int, n_ref: int) -> float:
    union = int(n_pred) + int(n_ref) - int(inter)
    return float(inter) / float(union) if union else float("nan")


def _as_bool(mask: np.ndarray) -> np.ndarray:
    return np.atleast_1d(np.asarray(mask).astype(bool, copy=False))


def _as_labels(array: np.ndarray, what: str) -> np.ndarray:
    """An integer label map (find_objects needs non-negative integers)."""
    array = np.asarray(array)
    if array.dtype == bool:
        return array.view(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} is not an integer label map (dtype {array.dtype})")
    return array


def _bounding_box(mask: np.ndarray) -> Box | None:
    found = ndimage.find_objects(np.ascontiguousarray(mask).view(np.uint8))
    return found[0] if found else None


def _label_boxes(labels: np.ndarray) -> dict[int, Box]:
    """Bounding box of every label present (one pass). Negative values are ignored."""
    if labels.size == 0:
        return {}
    signed = not np.issubdtype(labels.dtype, np.unsignedinteger)
    array = np.where(labels < 0, 0, labels) if signed and labels.min() < 0 else labels
    return {i + 1: box for i, box in enumerate(ndimage.find_objects(array)) if box is not None}


def _union_box(a: Box, b: Box, shape: Sequence[int], margin: int = 1) -> Box:
    """The bounding box of a and b, grown by `margin` voxels and clipped to the array."""
    return tuple(
        slice(max(min(x.start, y.start) - margin, 0), min(max(x.stop, y.stop) + margin, n))
        for x, y, n in zip(a, b, shape)
    )


def _sampling(spacing: Sequence[float] | float | None, ndim: int) -> np.ndarray | None:
    if spacing is None:
        return None
    values = np.asarray([spacing] * ndim if np.isscalar(spacing) else spacing, dtype=np.float64).ravel()
    if values.size != ndim or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(f"spacing {list(values)} does not give one positive value per axis ({ndim} axes)")
    return np.ascontiguousarray(values)


def _check_choice(value: str, choices: dict[str, str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
