"""Checks and transforms of geometry: finite values, same grid, resampling onto a grid."""
from __future__ import annotations

import dataclasses

import numpy as np

from swinseg.errors import SwinsegError
from swinseg.io.volume import Volume, _disk_array, _to_sitk, itk

# ------------------------------------------------------------------------------------------------- checking


def check_finite(volume: Volume) -> None:
    """Raise SwinsegError with the number of NaN/inf voxels, if any (integer arrays are always finite)."""
    if not np.issubdtype(volume.array.dtype, np.floating):
        return
    bad = int(volume.array.size - np.count_nonzero(np.isfinite(volume.array)))
    if bad:
        raise SwinsegError(f"{volume.name}: {bad} NaN/inf voxels of {volume.array.size}; fix or mask the scan first")


def check_same_geometry(a: Volume, b: Volume, rtol: float = 1e-4) -> None:
    """Raise SwinsegError naming both files and the first difference in shape, spacing, origin or direction.

    Spacing is compared relatively (`rtol`), origin to `rtol` x the largest spacing in mm, direction cosines
    to `rtol` absolutely.
    """
    shape_a, shape_b = a.array.shape[a.array.ndim - a.ndim :], b.array.shape[b.array.ndim - b.ndim :]
    scale = max(max(a.spacing), max(b.spacing)) if a.ndim == b.ndim else 1.0
    checks = [
        ("shape", shape_a, shape_b, lambda x, y: x == y),
        ("spacing", a.spacing, b.spacing, lambda x, y: np.allclose(x, y, rtol=rtol, atol=0)),
        ("origin", a.origin, b.origin, lambda x, y: np.allclose(x, y, rtol=0, atol=rtol * scale)),
        ("direction", a.direction, b.direction, lambda x, y: np.allclose(x, y, rtol=0, atol=rtol)),
    ]
    for what, value_a, value_b, same in checks:
        if len(value_a) != len(value_b) or not same(value_a, value_b):
            raise SwinsegError(
                f"geometry differs between {a.name} and {b.name}: {what} {_fmt(value_a)} vs {_fmt(value_b)}"
            )


def _fmt(values: tuple) -> str:
    return "(" + ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values) + ")"


def resample_like(moving: Volume, reference: Volume) -> Volume:
    """`moving` resampled onto `reference`'s grid by nearest neighbour (labels stay labels); 0 outside.

    The result has `reference`'s geometry and header (so it writes like `reference`), `moving`'s dtype and path.
    """
    sitk = itk()

    if moving.ndim != reference.ndim or moving.array.ndim != moving.ndim:
        raise SwinsegError(
            f"cannot resample {moving.name} ({moving.ndim}-D) onto {reference.name} ({reference.ndim}-D)"
        )
    grid = sitk.Image([int(n) for n in reference.array.shape[::-1]], sitk.sitkUInt8)
    grid.SetSpacing(reference.spacing[::-1])
    grid.SetOrigin(reference.origin)
    grid.SetDirection(reference.direction)
    source = _to_sitk(_disk_array(moving.array, moving), moving)
    resampled = sitk.Resample(source, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, source.GetPixelID())
    array = sitk.GetArrayFromImage(resampled).astype(moving.array.dtype, copy=False)
    return dataclasses.replace(reference, array=array, path=moving.path)
