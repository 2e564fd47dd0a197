"""The reference Swin-Unet augmentation, exactly (same operations, same interpolation), and the whole-slice
resize of a training pair; the caller passes a numpy Generator per sample."""
from __future__ import annotations

import functools

import numpy as np
import scipy.ndimage

from swinseg.preprocess import (
    resize_array,
)


@functools.lru_cache(maxsize=96)
def _rotation_gather(shape: tuple[int, int], angle: int) -> np.ndarray:
    """Flat source index + 1 of every output pixel (0 = outside), as scipy's nearest rotation picks them."""
    index = np.arange(1, shape[0] * shape[1] + 1, dtype=np.int64).reshape(shape)
    gather = scipy.ndimage.rotate(index, angle, order=0, reshape=False).astype(np.int32)
    gather.setflags(write=False)
    return gather


def rotate_nearest(array: np.ndarray, angle: int) -> np.ndarray:
    """`scipy.ndimage.rotate(array, angle, order=0, reshape=False)` for a 2-D array, as a cached gather."""
    padded = np.concatenate([np.zeros(1, dtype=array.dtype), array.ravel()])
    return padded[_rotation_gather(array.shape, int(angle))]


def augment_slice(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The reference's random part: with p=0.5 rot90 by k in 0..3 and a flip along a random axis; otherwise
    with p=0.5 a rotation by an integer angle in [-20, 19] degrees, nearest interpolation, same size."""
    if rng.random() > 0.5:
        k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
        return np.flip(np.rot90(image, k), axis), np.flip(np.rot90(label, k), axis)
    if rng.random() > 0.5:
        angle = int(rng.integers(-20, 20))
        return rotate_nearest(image, angle), rotate_nearest(label, angle)
    return image, label


def resize_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32, cubic) and label (nearest) resized to size x size exactly as scipy.ndimage.zoom does."""
    image = resize_array(np.asarray(image, dtype=np.float32), size, order=3)
    return image, resize_array(label, size, order=0)
