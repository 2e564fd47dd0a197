"""swinseg.metrics against medpy: values must be identical (==), not close."""
from __future__ import annotations

import math

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from swinseg import metrics

medpy_surface_distances = getattr(medpy_binary, "__surface_distances")  # module-private helper of medpy

SPACINGS_3D = [None, (3.0, 0.8, 0.8), (2.5, 0.7031, 0.7031), (1.0, 1.0, 1.0), (0.5, 1.7, 0.9)]
SPACINGS_2D = [None, (0.8, 0.8), (3.0, 0.6), (1.25, 0.5)]


def _random_pair(rng: np.random.Generator, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Two non-empty masks: noise, overlapping balls, dilated/shifted copies, or border-touching slabs."""
    shape = tuple(int(n) for n in rng.integers(4, 22 if ndim == 3 else 40, ndim))
    kind = rng.integers(0, 4)
    if kind == 0:  # salt and pepper
        p = rng.random(shape) < rng.uniform(0.05, 0.7)
        r = rng.random(shape) < rng.uniform(0.05, 0.7)
    else:
        grid = np.indices(shape, dtype=np.float64)

        def ball() -> np.ndarray:
            centre = [rng.uniform(-2, n + 1) for n in shape]  # may lie outside: cut by the border
            return sum((g - c) ** 2 for g, c in zip(grid, centre)) < rng.uniform(1.0, max(shape)) ** 2

        p, r = ball(), ball()
        if kind == 2:  # prediction = reference, dilated, shifted, plus a stray voxel
            p = np.roll(ndimage.binary_dilation(r), 1, axis=0)
            p[tuple(int(rng.integers(0, n)) for n in shape)] = True
        if kind == 3:
            r |= rng.random(shape) < 0.02
    p.flat[rng.integers(0, p.size)] = True  # never empty
    r.flat[rng.integers(0, r.size)] = True
    return p, r


@pytest.mark.parametrize("ndim", [2, 3])
def test_random_masks_equal_medpy(ndim: int) -> None:
    rng = np.random.default_rng(ndim)
    spacings = SPACINGS_3D if ndim == 3 else SPACINGS_2D
    for trial in range(150):
        p, r = _random_pair(rng, ndim)
        spacing = spacings[trial % len(spacings)]
        assert metrics.dice(p, r) == medpy_binary.dc(p, r)
        assert metrics.iou(p, r) == medpy_binary.jc(p, r)
        assert metrics.hd95(p, r, spacing) == medpy_binary.hd95(p, r, spacing)
        assert metrics.assd(p, r, spacing) == medpy_binary.assd(p, r, spacing)
        to_ref, to_pred = metrics.surface_distances(p, r, spacing)
        np.testing.assert_array_equal(to_ref, medpy_surface_distances(p, r, spacing))
        np.testing.assert_array_equal(to_pred, medpy_surface_distances(r, p, spacing))


def test_masks_touching_every_border_equal_medpy() -> None:
    """medpy erodes on the full array with the outside as background: a crop must do the same."""
    shape = (7, 9, 11)
    full = np.ones(shape, bool)  # the whole array: every border voxel is surface
    corner = np.zeros(shape, bool)
    corner[:3, :4, :5] = True
    faces = np.zeros(shape, bool)
    faces[0], faces[:, -1], faces[:, :, 0] = True, True, True
    for p, r in [(full, corner), (corner, full), (faces, corner), (full, faces), (full, full)]:
        for spacing in (None, (3.0, 0.8, 0.8)):
            assert metrics.hd95(p, r, spacing) == medpy_binary.hd95(p, r, spacing)
            assert metrics.assd(p, r, spacing) == medpy_binary.assd(p, r, spacing)
    # the full array's surface is its outer shell, so the distance to a one-voxel-thick face is not 0
    assert metrics.hd95(full, faces) == medpy_binary.hd95(full, faces) > 0


def test_far_apart_masks_and_tiny_structures_equal_medpy() -> None:
    shape = (20, 40, 40)
    p, r = np.zeros(shape, bool), np.zeros(shape, bool)
    p[2, 3, 4] = True  # one voxel in a corner
    r[14:19, 25:38, 30:39] = True
    r[17, 2, 36] = True  # a detached voxel
    line = np.zeros(shape, bool)
    line[10, 5:35, 20] = True  # one voxel thick: all surface
    for a, b in [(p, r), (r, p), (line, r), (p, line)]:
        for spacing in (None, (3.0, 0.8, 0.8), (5.0, 0.5, 0.9)):
            assert metrics.hd95(a, b, spacing) == medpy_binary.hd95(a, b, spacing)
            assert metrics.assd(a, b, spacing) == medpy_binary.assd(a, b, spacing)


def test_one_dimensional_and_non_bool_inputs() -> None:
    p = np.array([0, 2, 2, 0, 0, 0, 0, 1])  # non-zero = object, as medpy
    r = np.array([0, 0, 0, 0, 5, 5, 0, 0])
    assert metrics.hd95(p, r) == medpy_binary.hd95(p, r)
    assert metrics.dice(p, r) == medpy_binary.dc(p, r) == 0.0


def test_hd95_definitions_hand_computed() -> None:
    """1-D: pred {0}, ref {0, 1, ..., 9}: surfaces {0} and {0, 9}. pred->ref [0]; ref->pred [0, 9].

    medpy pools [0, 0, 9]: 95th percentile by linear interpolation = 0 + 0.9 * (9 - 0) = 8.1.
    max: max(q95([0]), q95([0, 9])) = max(0, 0.95 * 9) = 8.55.
    """
    p = np.zeros(10, bool)
    p[0] = True
    r = np.ones(10, bool)
    assert metrics.hd95(p, r) == pytest.approx(8.1, abs=1e-12)
    assert metrics.hd95_max(p, r) == pytest.approx(8.55, abs=1e-12)
    assert metrics.hd95(p, r, 2.0) == pytest.approx(16.2, abs=1e-12)  # scalar spacing scales distances


def test_hd95_max_is_max_of_directed_percentiles_and_sees_false_positives() -> None:
    grid = np.indices((30, 60, 60), dtype=np.float64)
    ref = ((grid[0] - 15) / 4) ** 2 + ((grid[1] - 30) / 12) ** 2 + ((grid[2] - 30) / 12) ** 2 <= 1
    pred = np.roll(ref, 2, axis=2)
    pred[20:22, 50:56, 50:56] = True  # a distant false-positive blob: 6% of pred surface, 4% pooled
    spacing = (2.5, 0.8, 0.8)
    to_ref = medpy_surface_distances(pred, ref, spacing)
    to_pred = medpy_surface_distances(ref, pred, spacing)
    expected = max(np.percentile(to_ref, 95), np.percentile(to_pred, 95))
    assert metrics.hd95_max(pred, ref, spacing) == expected
    assert metrics.hd95_max(pred, ref, spacing) > 2 * metrics.hd95(pred, ref, spacing)


@pytest.mark.parametrize("definition", ["medpy", "max"])
def test_score_labels_equals_per_class_medpy(definition: str) -> None:
    rng = np.random.default_rng(7)
    shape = (12, 40, 36)
    grid = np.indices(shape, dtype=np.float64)
    ref = np.zeros(shape, np.uint8)
    for label in (1, 2, 3, 5):
        centre = [rng.uniform(0, n) for n in shape]
        ref[sum(((g - c) / s) ** 2 for g, c, s in zip(grid, centre, (3, 8, 8))) <= 1] = label
    pred = np.roll(ref, (1, 2, -1), axis=(0, 1, 2))
    pred[0, 0, :5] = 2  # false positive touching the border
    pred[pred == 3] = 0  # missed organ
    pred[5, 20, 20] = 9  # label absent from the reference
    spacing = (3.0, 0.8, 0.8)
    scores = metrics.score_labels(pred, ref, [1, 2, 3, 4, 5, 9], spacing, hd95=definition)
    for label in (1, 2, 5):
        p, r = pred == label, ref == label
        assert scores[label].dice == medpy_binary.dc(p, r)
        assert scores[label].iou == medpy_binary.jc(p, r)
        assert scores[label].assd == medpy_binary.assd(p, r, spacing)
        assert scores[label].hd95 == metrics.score_masks(p, r, spacing, hd95=definition).hd95
        if definition == "medpy":
            assert scores[label].hd95 == medpy_binary.hd95(p, r, spacing)
        assert (scores[label].pred_voxels, scores[label].ref_voxels) == (np.sum(p), np.sum(r))
        assert scores[label].flag == ""
    diagonal = metrics.image_diagonal(shape, spacing)
    assert scores[3].flag == "pred_empty" and scores[3].hd95 == diagonal and scores[3].dice == 0.0
    assert scores[4].flag == "both_empty" and (scores[4].dice, scores[4].hd95) == (1.0, 0.0)
    assert scores[9].flag == "ref_empty" and scores[9].pred_voxels == 1 and scores[9].hd95 == diagonal
    # labels=None: every label present in either map
    assert sorted(metrics.score_labels(pred, ref, None, spacing)) == [1, 2, 3, 5, 9]


def test_empty_policies() -> None:
    empty, some = np.zeros((5, 6, 7), bool), np.zeros((5, 6, 7), bool)
    some[2, 3, 3] = True
    spacing = (2.0, 1.0, 0.5)
    diagonal = math.sqrt(10.0**2 + 6.0**2 + 3.5**2)
    assert metrics.image_diagonal(some.shape, spacing) == pytest.approx(diagonal)

    def score(p: np.ndarray, r: np.ndarray, policy: str) -> tuple:
        s = metrics.score_masks(p, r, spacing, empty=policy)
        return s.dice, s.iou, s.hd95, s.assd, s.flag

    assert score(empty, empty, "worst") == (1.0, 1.0, 0.0, 0.0, "both_empty")
    assert score(empty, some, "worst") == (0.0, 0.0, pytest.approx(diagonal), pytest.approx(diagonal), "pred_empty")
    assert score(some, empty, "worst")[2] == pytest.approx(diagonal)
    assert score(some, empty, "worst")[4] == "ref_empty"
    both_nan = score(empty, empty, "nan")
    assert all(math.isnan(v) for v in both_nan[:4]) and both_nan[4] == "both_empty"
    one_nan = score(some, empty, "nan")
    assert one_nan[:2] == (0.0, 0.0) and math.isnan(one_nan[2]) and math.isnan(one_nan[3])
    # the papers: prediction non-empty, reference empty -> (1, 0); prediction empty -> (0, 0)
    assert score(some, empty, "paper")[:4] == (1.0, 1.0, 0.0, 0.0)
    assert score(empty, some, "paper")[:4] == (0.0, 0.0, 0.0, 0.0)
    assert score(empty, empty, "paper")[:4] == (0.0, 0.0, 0.0, 0.0)
    # medpy agrees where it defines Dice: one empty mask -> 0; both empty -> NaN
    assert metrics.dice(some, empty) == medpy_binary.dc(some, empty) == 0.0
    with pytest.warns(RuntimeWarning):
        assert math.isnan(medpy_binary.dc(empty, empty))
    assert math.isnan(metrics.dice(empty, empty))


def test_errors_and_volumes() -> None:
    some = np.zeros((4, 4, 4), bool)
    some[1, 1, 1] = True
    with pytest.raises(ValueError, match="empty"):
        metrics.hd95(some, np.zeros_like(some))
    with pytest.raises(ValueError, match="spacing"):
        metrics.hd95(some, some, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        metrics.hd95(some, some, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="hd95"):
        metrics.score_masks(some, some, hd95="mean")
    with pytest.raises(ValueError, match="empty"):
        metrics.score_labels(some.astype(np.uint8), some.astype(np.uint8), [1], empty="zero")
    with pytest.raises(ValueError, match="integer label map"):
        metrics.score_labels(some.astype(np.float32), some.astype(np.uint8), [1])
    assert metrics.volume_ml(1000, (3.0, 0.8, 0.8)) == pytest.approx(1.92)


def _independent_nsd(pred, ref, tolerance, spacing):
    """NSD from scratch on the full arrays: surfaces by erosion, distances by an EDT of the other surface."""
    from scipy import ndimage as ndi

    structure = ndi.generate_binary_structure(pred.ndim, 1)
    surface_p = pred & ~ndi.binary_erosion(pred, structure)
    surface_r = ref & ~ndi.binary_erosion(ref, structure)
    to_r = ndi.distance_transform_edt(~surface_r, sampling=spacing)[surface_p]
    to_p = ndi.distance_transform_edt(~surface_p, sampling=spacing)[surface_r]
    return (np.sum(to_r <= tolerance) + np.sum(to_p <= tolerance)) / (to_r.size + to_p.size)


def test_nsd_equals_an_independent_computation_and_known_cases():
    from swinseg.metrics import nsd, score_labels

    square = np.zeros((30, 30), bool)
    square[5:15, 5:15] = True
    shifted = np.roll(square, 2, axis=1)
    assert nsd(square, shifted, 2.0) == 1.0  # every surface voxel within 2 of the other surface
    assert nsd(square, square, 0.0) == 1.0
    assert 0.0 < nsd(square, shifted, 1.0) < 1.0
    rng = np.random.default_rng(3)
    for trial in range(6):
        field = ndimage.gaussian_filter(rng.normal(size=(12, 40, 36)), 2.0)
        pred, ref = field > 0.05, np.roll(field, trial, axis=2) > 0.0
        spacing = (2.5, 0.8, 0.7)
        for tolerance in (0.0, 1.0, 3.0):
            assert nsd(pred, ref, tolerance, spacing) == pytest.approx(_independent_nsd(pred, ref, tolerance, spacing))
    labels_p, labels_r = pred.astype(np.uint8), ref.astype(np.uint8)
    labels_r[0, :3, :3] = 2  # label 2 only in the reference: NSD follows Dice (0) under every policy
    scores = score_labels(labels_p, labels_r, [1, 2], spacing, nsd_tolerance=1.0)
    assert scores[1].nsd == pytest.approx(_independent_nsd(pred, labels_r == 1, 1.0, spacing))
    assert scores[2].nsd == 0.0 and np.isnan(score_labels(labels_p, labels_r, [1], spacing)[1].nsd)
