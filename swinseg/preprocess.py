"""Intensity normalisation and slice resizing, shared by predict, data and train.

The resize reproduces `scipy.ndimage.zoom(image, (h / H, w / W), order=...)` with scipy's defaults
(mode "constant", cval 0, grid_mode False, prefilter True), which is what the reference Swin-Unet code calls.
Zooming with these settings is linear and separable, so for fixed sizes it equals `My @ slice @ Mx.T`, where
`My` and `Mx` are scipy's zoom of an identity matrix along one axis; batches then resize as two matmuls on any
device. Order 0 (labels) is an index gather with the same indices scipy picks.

A quirk of scipy that the reference therefore has too: for some size pairs (512 -> 224 among them) the last
output row maps a hair beyond the input's last sample, and mode "constant" fills it with 0, for images
(order 3) and labels (order 0) alike. The functions here reproduce that exactly.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np
import scipy.ndimage
import scipy.sparse

from swinseg.config import Preprocessing

if TYPE_CHECKING:
    import torch


def intensity_bounds(array: np.ndarray, prep: Preprocessing) -> tuple[float, float]:
    """The intensity range mapped to [0, 1]: the CT window, or the MR volume's percentiles."""
    if prep.modality == "CT":
        assert prep.window is not None
        return prep.window
    assert prep.percentiles is not None
    low, high = np.percentile(array, prep.percentiles)
    return float(low), float(high)


def scale_intensities(array: np.ndarray, low: float, high: float) -> np.ndarray:
    """`array` clipped to [low, high] and scaled to [0, 1], float32 (all zeros when high == low)."""
    values = np.clip(np.asarray(array, dtype=np.float32), np.float32(low), np.float32(high))
    if high <= low:
        return np.zeros_like(values)
    values -= np.float32(low)
    values /= np.float32(high - low)
    return values


def normalize(array: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Network input intensities in [0, 1] (float32): CT clipped to the HU window, MR to its percentiles."""
    return scale_intensities(array, *intensity_bounds(array, prep))


@functools.lru_cache(maxsize=64)
def _zoom_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    if n_in < 1 or n_out < 1:
        raise ValueError(f"zoom sizes must be positive, got {n_in} -> {n_out}")
    if n_in == n_out:
        return np.eye(n_in)
    matrix = scipy.ndimage.zoom(np.eye(n_in), (n_out / n_in, 1.0), order=order)
    if matrix.shape != (n_out, n_in):  # scipy rounds n_in * factor; guard against a surprise
        raise AssertionError(f"scipy zoom gave {matrix.shape} for {n_in} -> {n_out}")
    matrix.setflags(write=False)
    return matrix


def zoom_matrix(n_in: int, n_out: int, order: int = 3) -> np.ndarray:
    """(n_out, n_in) float64 matrix M with `M @ x == scipy.ndimage.zoom(x, n_out / n_in, order=order)` along
    axis 0 (scipy defaults, as the reference calls it). Cached; read-only."""
    return _zoom_matrix(int(n_in), int(n_out), int(order))


@functools.lru_cache(maxsize=64)
def _gather(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    matrix = zoom_matrix(n_in, n_out, 0)
    indices, inside = matrix.argmax(axis=1), matrix.sum(axis=1) > 0.5
    indices.setflags(write=False)
    inside.setflags(write=False)
    return indices, inside


def zoom_gather(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Order-0 zoom along one axis as a gather: (source index per output index, whether scipy found the
    source inside the input; outside rows get 0)."""
    return _gather(int(n_in), int(n_out))


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output index for a nearest-neighbour resize: floor(i * (n_in-1)/(n_out-1) + 0.5).

    Equals scipy's order-0 zoom wherever scipy stays inside the input (always when enlarging, e.g. the
    reference's 224 -> 512 resize back of predictions); `zoom_gather` is scipy's exact behaviour.
    """
    if n_out == 1:
        return np.zeros(1, dtype=np.int64)
    return np.floor(np.arange(n_out) * ((n_in - 1) / (n_out - 1)) + 0.5).astype(np.int64)


def _size_pair(size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def resize_array(array: np.ndarray, size: int | tuple[int, int], order: int = 3) -> np.ndarray:
    """Resize the last two axes of a numpy array like scipy.ndimage.zoom (order 0 keeps the dtype; other
    orders compute in float32 for float32 input, float64 otherwise)."""
    height, width = _size_pair(size)
    in_height, in_width = array.shape[-2:]
    if (in_height, in_width) == (height, width):
        return array
    if order == 0:
        rows, rows_inside = zoom_gather(in_height, height)
        cols, cols_inside = zoom_gather(in_width, width)
        result = array[..., rows[:, None], cols[None, :]]
        if not (rows_inside.all() and cols_inside.all()):
            result[..., ~(rows_inside[:, None] & cols_inside[None, :])] = 0
        return result
    dtype = np.float32 if array.dtype == np.float32 else np.float64
    if array.ndim > 2:
        flat = array.reshape(-1, in_height, in_width)
        return np.stack([resize_array(s, size, order) for s in flat]).reshape(*array.shape[:-2], height, width)
    my = _sparse_zoom_matrix(in_height, height, order, dtype)
    mx = _sparse_zoom_matrix(in_width, width, order, dtype)
    return np.ascontiguousarray((mx @ (my @ array.astype(dtype, copy=False)).T).T)


@functools.lru_cache(maxsize=64)
def _sparse_zoom_matrix(n_in: int, n_out: int, order: int, dtype: type) -> scipy.sparse.csr_matrix:
    """`zoom_matrix` without its negligible entries (the spline prefilter's weights decay by 0.27 per
    sample; dropping those below 1e-10 changes results by < 1e-7 relative) as a sparse matrix: a 512 -> 224
    slice resizes several times faster than with a dense matmul, single-threaded (good in loader workers)."""
    matrix = zoom_matrix(n_in, n_out, order)
    kept = np.where(np.abs(matrix) > 1e-10 * np.abs(matrix).max(), matrix, 0.0)
    return scipy.sparse.csr_matrix(kept.astype(dtype))


@functools.lru_cache(maxsize=64)
def _torch_matrix(n_in: int, n_out: int, order: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    import torch

    return torch.tensor(zoom_matrix(n_in, n_out, order), dtype=dtype, device=device)


@functools.lru_cache(maxsize=64)
def _torch_gather(n_in: int, n_out: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    indices, inside = zoom_gather(n_in, n_out)
    return torch.tensor(indices, device=device), torch.tensor(inside, device=device)


def resize_slices(slices: torch.Tensor, size: int | tuple[int, int], order: int = 3) -> torch.Tensor:
    """Resize a batch of slices (B, [C,] H, W) like scipy.ndimage.zoom on each slice, on the tensor's device.

    Order 3/1: two matmuls in the tensor's floating dtype (autocast is switched off so the resize stays in
    that dtype). Order 0: an index gather, any dtype (labels keep their integer type).
    """
    import torch

    height, width = _size_pair(size)
    in_height, in_width = slices.shape[-2:]
    if (in_height, in_width) == (height, width):
        return slices
    device = str(slices.device)
    if order == 0:
        rows, rows_inside = _torch_gather(in_height, height, device)
        cols, cols_inside = _torch_gather(in_width, width, device)
        result = slices.index_select(-2, rows).index_select(-1, cols)
        if not (bool(rows_inside.all()) and bool(cols_inside.all())):
            result = result * (rows_inside[:, None] & cols_inside[None, :]).to(result.dtype)
        return result
    if not slices.is_floating_point():
        raise TypeError(f"resize_slices order {order} needs floating slices, got {slices.dtype}")
    my = _torch_matrix(in_height, height, order, device, slices.dtype)
    mx = _torch_matrix(in_width, width, order, device, slices.dtype)
    with torch.autocast(device_type=slices.device.type, enabled=False):
        return my @ slices @ mx.T
