"""The same physical scan stored in other array orders, for orientation tests."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from swinseg import io


def transform_volume(volume: io.Volume, flips_xyz: tuple[int, ...], perm_xyz: tuple[int, int, int]) -> io.Volume:
    """The same physical image stored differently: index axes flipped, then permuted, header updated to match.

    Point of index i (x, y, z order): origin + D @ diag(spacing) @ i.
    """
    direction = volume.direction_matrix().copy()
    spacing = np.array(volume.spacing[::-1])
    origin = np.array(volume.origin)
    shape_xyz = volume.array.shape[::-1]
    array = volume.array
    for k in flips_xyz:
        origin = origin + direction[:, k] * spacing[k] * (shape_xyz[k] - 1)
        direction[:, k] *= -1
        array = np.flip(array, axis=2 - k)
    direction, spacing = direction[:, list(perm_xyz)], spacing[list(perm_xyz)]
    array = np.transpose(array, [2 - perm_xyz[2 - a] for a in range(3)])
    return io.Volume(np.ascontiguousarray(array), tuple(spacing[::-1]), tuple(origin), tuple(direction.ravel()))


def undo_transform(array: np.ndarray, flips_xyz, perm_xyz) -> np.ndarray:
    inverse = [2 - int(np.argsort(perm_xyz)[2 - a]) for a in range(3)]
    array = np.transpose(array, inverse)
    for k in flips_xyz:
        array = np.flip(array, axis=2 - k)
    return array


def as_sitk(volume: io.Volume) -> sitk.Image:
    image = sitk.GetImageFromArray(volume.array)
    image.SetSpacing(volume.spacing[::-1])
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)
    return image
