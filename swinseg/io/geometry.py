"""Checks and transforms of geometry: finite values, same grid, resampling onto a grid, orientation codes."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from swinseg.errors import SwinsegError
from swinseg.io.volume import _AXIS_LETTERS, Volume, _disk_array, _to_sitk, itk

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


# ---------------------------------------------------------------------------------------------- orientation


def _axis_assignment(direction: np.ndarray) -> tuple[list[int], list[int]]:
    """For each index axis, the nearest physical axis and its sign (greedy on the largest cosine)."""
    n = direction.shape[0]
    cosines = np.abs(direction).copy()
    physical = [-1] * n
    for _ in range(n):
        p, k = np.unravel_index(np.argmax(cosines), cosines.shape)
        physical[k] = int(p)
        cosines[p, :] = -1
        cosines[:, k] = -1
    signs = [1 if direction[physical[k], k] >= 0 else -1 for k in range(n)]
    return physical, signs


def _parse_code(code: str, ndim: int) -> tuple[list[int], list[int]]:
    """Physical axis and sign per index axis of an orientation code; 2-D keeps only its in-plane letters."""
    letters = code.upper()
    if ndim == 2:
        letters = "".join(c for c in letters if c in "LRPA")
    axes, signs = [], []
    for letter in letters:
        for axis, pair in enumerate(_AXIS_LETTERS):
            if letter in pair:
                axes.append(axis)
                signs.append(1 if letter == pair[0] else -1)
    if len(axes) != ndim or sorted(axes) != list(range(ndim)):
        raise SwinsegError(f"orientation code {code!r} is not a valid {ndim}-D code (like 'LPS' or 'RAS')")
    return axes, signs


def orientation_plan(volume: Volume, code: str) -> tuple[list[int], tuple[int, ...]]:
    """Array-axis permutation (target axis a <- source axis perm[a]) and flipped target axes for `code`."""
    n = volume.ndim
    source_axes, source_signs = _axis_assignment(volume.direction_matrix())
    target_axes, target_signs = _parse_code(code, n)
    # target index axis j takes source index axis k with the same physical axis; array axis = n - 1 - index
    source_of = [source_axes.index(target_axes[j]) for j in range(n)]
    perm = [n - 1 - source_of[n - 1 - a] for a in range(n)]
    flips = tuple(a for a in range(n) if source_signs[source_of[n - 1 - a]] != target_signs[n - 1 - a])
    return perm, flips


def oriented_spacing(volume: Volume, code: str) -> tuple[float, ...]:
    """The volume's spacing in the array order of `to_orientation(volume, code)`."""
    perm, _ = orientation_plan(volume, code)
    return tuple(float(volume.spacing[p]) for p in perm)


def to_orientation(volume: Volume, code: str) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The volume's array permuted and flipped into orientation `code` (as SimpleITK's DICOMOrient(code)
    would give it), without resampling, and a function mapping an array in that orientation (with any
    number of extra leading axes, e.g. classes) back to the volume's own array order.

    The returned array is a view of `volume.array`. Codes name the direction each index axis (x, y, z)
    points to, in SimpleITK's convention: "LPS" is the identity direction.
    """
    n = volume.ndim
    perm, flips = orientation_plan(volume, code)
    inverse_perm = list(np.argsort(perm))

    def forward(array: np.ndarray) -> np.ndarray:
        lead = array.ndim - n
        moved = np.transpose(array, list(range(lead)) + [lead + p for p in perm])
        return np.flip(moved, axis=tuple(lead + a for a in flips)) if flips else moved

    def back(array: np.ndarray) -> np.ndarray:
        lead = array.ndim - n
        if lead < 0:
            raise ValueError(f"array with {array.ndim} axes cannot be a {n}-D volume")
        unflipped = np.flip(array, axis=tuple(lead + a for a in flips)) if flips else array
        return np.transpose(unflipped, list(range(lead)) + [lead + int(p) for p in inverse_perm])

    return forward(volume.array), back
