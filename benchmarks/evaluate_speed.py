"""Speed of swinseg's metrics against medpy on a CT-sized synthetic case, with identical values.

A 512x512x150 label map (spacing 3.0 x 0.8 x 0.8 mm) with 8 organ-like structures of different sizes, and a
prediction perturbed as a real model's would be (shifts, erosion/dilation, boundary noise, false-positive
blobs near and far). Times medpy's dc + hd95 per class on the full arrays (what the Swin-Unet/TransUNet
evaluation does) and swinseg.metrics.score_labels (Dice, IoU, HD95, ASSD of all classes) in the same run,
checks every Dice and HD95 value is identical, and prints the ratio. One process, one core.

    python benchmarks/evaluate_speed.py            # full size (medpy takes a minute or two)
    python benchmarks/evaluate_speed.py --quick    # 256x256x60, a few seconds
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core for both sides

import numpy as np
from scipy import ndimage

# name: (centre (z, y, x) as fractions of the volume, semi-axes in mm (z, y, x))
ORGANS = {
    "aorta": ((0.50, 0.55, 0.50), (150.0, 11.0, 11.0)),
    "gallbladder": ((0.45, 0.55, 0.33), (25.0, 14.0, 12.0)),
    "kidney_left": ((0.40, 0.68, 0.70), (50.0, 28.0, 24.0)),
    "kidney_right": ((0.42, 0.68, 0.30), (50.0, 28.0, 24.0)),
    "liver": ((0.62, 0.45, 0.30), (80.0, 85.0, 75.0)),
    "pancreas": ((0.50, 0.58, 0.52), (20.0, 12.0, 55.0)),
    "spleen": ((0.62, 0.62, 0.75), (50.0, 40.0, 28.0)),
    "stomach": ((0.65, 0.38, 0.62), (55.0, 45.0, 45.0)),
}


FULL_SHAPE = (150, 512, 512)
FULL_SPACING = (3.0, 0.8, 0.8)


def make_case(shape: tuple[int, int, int], seed: int = 0):
    """(reference, prediction) uint8 label maps with the organs above and a perturbed prediction. The anatomy
    is that of FULL_SHAPE at FULL_SPACING, scaled to `shape` (whose spacing grows accordingly)."""
    rng = np.random.default_rng(seed)
    ref = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    scale = np.asarray(shape) / np.asarray(FULL_SHAPE)
    for label, (centre, axes) in enumerate(ORGANS.values(), start=1):
        centre_vox = np.asarray(centre) * np.asarray(shape)
        radii = np.asarray(axes) / np.asarray(FULL_SPACING) * scale  # voxels
        organ = _blob(shape, centre_vox, radii, rng)
        ref[organ & (ref == 0)] = label
        # prediction: shifted 0-2 voxels in-plane and 0-1 slice, grown or shrunk, ragged boundary
        moved = _shift(organ, rng.integers(-1, 2), rng.integers(-2, 3), rng.integers(-2, 3))
        moved = _grow_or_shrink(moved, int(rng.integers(-2, 3)))
        moved = _ragged(moved, rng)
        pred[moved & (pred == 0)] = label
        for _ in range(int(rng.integers(1, 4))):  # false-positive blobs, some near the organ, some far
            far = rng.random() < 0.4
            offset = rng.normal(0, 0.25 if far else 0.06, 3) * np.asarray(shape)
            spot = np.clip(centre_vox + offset, 0, np.asarray(shape) - 1)
            radius_mm = rng.uniform(3.0, 10.0)
            blob = _blob(shape, spot, radius_mm / np.asarray(FULL_SPACING) * scale, rng)
            pred[blob & (pred == 0)] = label
    return ref, pred


def _blob(shape, centre, radii, rng) -> np.ndarray:
    """An ellipsoid with a lumpy surface (a second, offset ellipsoid merged in), computed in its box only."""
    mask = np.zeros(shape, bool)
    for part in range(2):
        c = np.asarray(centre) + (rng.normal(0, 0.3, 3) * np.asarray(radii) if part else 0)
        r = np.maximum(np.asarray(radii) * (rng.uniform(0.6, 0.9) if part else 1.0), 0.8)
        lo = np.maximum(np.floor(c - r).astype(int), 0)
        hi = np.minimum(np.ceil(c + r).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue
        grid = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi))]
        inside = sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) <= 1.0
        mask[tuple(slice(a, b) for a, b in zip(lo, hi))] |= inside
    return mask


def _shift(mask: np.ndarray, dz: int, dy: int, dx: int) -> np.ndarray:
    return np.roll(mask, (int(dz), int(dy), int(dx)), axis=(0, 1, 2))


def _grow_or_shrink(mask: np.ndarray, steps: int) -> np.ndarray:
    if steps == 0:
        return mask
    box = ndimage.find_objects(mask.view(np.uint8))[0]
    box = tuple(slice(max(s.start - 3, 0), min(s.stop + 3, n)) for s, n in zip(box, mask.shape))
    out = mask.copy()
    op = ndimage.binary_dilation if steps > 0 else ndimage.binary_erosion
    out[box] = op(mask[box], iterations=abs(steps))
    return out


def _ragged(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip ~30% of the boundary voxels, as a model's noisy edge."""
    box = ndimage.find_objects(mask.view(np.uint8))
    if not box:
        return mask
    box = tuple(slice(max(s.start - 2, 0), min(s.stop + 2, n)) for s, n in zip(box[0], mask.shape))
    crop = mask[box]
    edge = ndimage.binary_dilation(crop) ^ ndimage.binary_erosion(crop)
    flip = edge & (rng.random(crop.shape) < 0.3)
    out = mask.copy()
    out[box] = crop ^ flip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256x256x60 instead of 512x512x150")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from medpy.metric import binary as medpy_binary

    from swinseg.metrics import score_labels

    shape = (60, 256, 256) if args.quick else FULL_SHAPE
    spacing = tuple(float(s * n / m) for s, n, m in zip(FULL_SPACING, FULL_SHAPE, shape))
    ref, pred = make_case(shape, args.seed)
    labels = list(range(1, len(ORGANS) + 1))
    print(f"volume {shape} (z, y, x), spacing {spacing} mm, {len(labels)} classes")
    for label, name in zip(labels, ORGANS):
        n_ref, n_pred = int(np.count_nonzero(ref == label)), int(np.count_nonzero(pred == label))
        print(f"  {label} {name:<13} ref {n_ref:>9,} voxels   pred {n_pred:>9,} voxels")

    # wall and CPU time: on a shared machine the CPU-time ratio is the fairer one
    wall, cpu = time.perf_counter(), time.process_time()
    medpy_values = {}
    for label in labels:
        p, r = pred == label, ref == label
        medpy_values[label] = (medpy_binary.dc(p, r), medpy_binary.hd95(p, r, voxelspacing=spacing))
    medpy_wall, medpy_cpu = time.perf_counter() - wall, time.process_time() - cpu

    wall, cpu = time.perf_counter(), time.process_time()
    scores = score_labels(pred, ref, labels, spacing)
    swinseg_wall, swinseg_cpu = time.perf_counter() - wall, time.process_time() - cpu

    print(f"\n{'class':<14}{'medpy Dice':>12}{'swinseg Dice':>14}{'medpy HD95':>12}{'swinseg HD95':>14}")
    mismatches = 0
    for label, name in zip(labels, ORGANS):
        dc, hd = medpy_values[label]
        same = dc == scores[label].dice and hd == scores[label].hd95
        mismatches += not same
        print(f"{name:<14}{dc:>12.6f}{scores[label].dice:>14.6f}{hd:>12.6f}{scores[label].hd95:>14.6f}"
              f"{'' if same else '   DIFFERENT'}")
    print(f"\n{'':<48}{'wall s':>9}{'CPU s':>9}")
    print(f"{'medpy dc + hd95, ' + str(len(labels)) + ' classes':<48}{medpy_wall:>9.2f}{medpy_cpu:>9.2f}")
    print(f"{'swinseg score_labels (Dice, IoU, HD95, ASSD)':<48}{swinseg_wall:>9.2f}{swinseg_cpu:>9.2f}")
    print(f"speed-up: {medpy_wall / swinseg_wall:.1f}x wall, {medpy_cpu / swinseg_cpu:.1f}x CPU (target >= 20x); "
          f"values identical: {mismatches == 0}")
    if mismatches:
        raise SystemExit(f"{mismatches} classes differ from medpy")


if __name__ == "__main__":
    main()
