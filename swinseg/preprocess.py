"""Volume -> network input: the one home shared by training, validation and predict.

A volume is oriented to the card's orientation code (a view), cut into slices along the card's plane
(`prepare_volume`, with a swinseg.orientation layout), and its intensities mapped to [0, 1] (CT window, or the
volume's MR percentiles). Then one of two in-plane paths, decided by the card's `spacing` (for predict:
swinseg.slice_paths):

- `spacing: null`, the published path: every slice resized whole to img_size x img_size (below);
- `spacing: [sy, sx]`: slices resampled to that spacing (`grid_size`; images bilinear, antialiased when
  shrinking, labels nearest) and covered by img_size tiles (`tile_starts`, `gaussian_importance`), as nnU-Net
  and TotalSegmentator do, so a scan of any field of view and spacing shows the network anatomy at the scale it
  was trained on. Resampling is edge-aligned: the resampled grid covers the slice's extent, n' = round(n * s /
  s'), so mapping back is the same resize the other way.

Whole-slice resize: The resize reproduces `scipy.ndimage.zoom(image, (h / H, w / W), order=...)` with scipy's defaults
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
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from swinseg.choices import PLANES
from swinseg.config import AUTO, Preprocessing
from swinseg.defaults import TILE_OVERLAP
from swinseg.errors import SwinsegError
from swinseg.orientation import Layout, layout

if TYPE_CHECKING:  # scipy is imported where used: the tiled path and a predict call's start do without it
    import scipy.sparse
    import torch

    from swinseg.io import Volume

# -------------------------------------------------------------------------------------- prepared volumes


@dataclass
class PreparedVolume:
    """A scan laid out for the network: `slices` (D, H, W) in the scan's own dtype (usually a view of its
    array), the intensity range `bounds` mapped to [0, 1] batch by batch, the in-plane `spacing` (rows,
    columns) in mm (None when unknown), and the `layout` that maps the scan's array to the slices."""

    slices: np.ndarray
    bounds: tuple[float, float]
    spacing: tuple[float, float] | None
    layout: Layout

    def restore(self, array: np.ndarray) -> np.ndarray:
        """An array in the slice layout (extra leading axes, e.g. classes, allowed) in the scan's array order."""
        return self.layout.from_slices(array)

    def normalized(self, start: int = 0, stop: int | None = None, context: int = 0) -> np.ndarray:
        """Slices start:stop as network input: float32 in [0, 1], with `context` neighbours (slice_stack)."""
        stop = len(self.slices) if stop is None else stop
        return scale_intensities(slice_stack(self.slices, start, stop, context), *self.bounds)


def prepare_volume(volume: Volume, prep: Preprocessing, plane: str | None = None, *,
                   intensities: bool = True) -> PreparedVolume:
    """`volume` oriented as the card says (a view), its `plane` slices (default: the card's plane) first, and
    the intensity range of the card's preprocessing. Labels pass `intensities=False` (bounds unused).

    2-D 8-bit images (PNG/JPEG) are display images: scaled from [0, 255] instead.
    """
    plane = (plane or prep.plane).lower()
    if plane not in PLANES:
        raise SwinsegError(f"--axis {plane!r}: expected one of {', '.join(PLANES)}")
    scan = layout(volume, prep.orientation, plane)
    slices = scan.to_slices(volume.array)
    if volume.ndim == 2 and slices.dtype == np.uint8:
        bounds = (0.0, 255.0)
    elif volume.ndim == 3 and volume.normalized:
        bounds = (0.0, 1.0)
    else:
        bounds = intensity_bounds(slices, prep) if intensities else (0.0, 1.0)
    return PreparedVolume(slices, bounds, scan.in_plane_spacing if volume.spacing_known else None, scan)


# ---------------------------------------------------------------------------------------- 2.5-D context


def context_indices(centres: np.ndarray, depth: int, context: int) -> np.ndarray:
    """(N, 2k+1) indices of the slices centre-k .. centre+k of each centre (k = `context`), clipped to
    0 .. depth-1: at the ends of the volume the edge slice is repeated."""
    offsets = np.arange(-context, context + 1)
    return np.clip(np.asarray(centres, dtype=np.int64)[:, None] + offsets, 0, depth - 1)


def slice_stack(slices: np.ndarray, start: int, stop: int, context: int) -> np.ndarray:
    """Slices start:stop of (D, H, W) `slices` as network inputs: (B, H, W) without context (the network
    repeats the slice into its 3 channels); with `context` k, (B, 2k+1, H, W), each slice between its k
    neighbours on either side along the slicing axis (see context_indices)."""
    if context == 0:
        return slices[start:stop]
    return slices[context_indices(np.arange(start, stop), len(slices), context)]


# ------------------------------------------------------------------------------------- target-spacing grid


def grid_size(size: tuple[int, int], spacing: tuple[float, float], target: tuple[float, float]) -> tuple[int, int]:
    """Rows and columns of a slice of `size` at `spacing` resampled to the `target` spacing (mm)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(size, spacing, target))  # type: ignore[return-value]


def resample_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float (B, C, H, W) resampled to `size`: bilinear, edge-aligned, antialiased when shrinking (an average
    over the source pixels each output pixel covers, so downsampled CT noise does not alias)."""
    import torch
    import torch.nn.functional as F

    if tuple(images.shape[-2:]) == tuple(size):
        return images
    with torch.autocast(device_type=images.device.type, enabled=False):
        return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def nearest_source(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output index for an edge-aligned nearest resize: floor((i + 0.5) * n_in / n_out)."""
    return np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1)


def resample_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Labels (..., H, W) resampled to `size` by nearest neighbour (the same grid as `resample_images`)."""
    height, width = labels.shape[-2:]
    if (height, width) == tuple(size):
        return labels
    rows, cols = nearest_source(height, size[0]), nearest_source(width, size[1])
    return labels[..., rows[:, None], cols[None, :]]


def resample_to_grid(image: np.ndarray, bounds: tuple[float, float], label: np.ndarray,
                     spacing: tuple[float, float], target: tuple[float, float],
                     chunk: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Raw image slices (D, H, W) normalised from `bounds` and resampled from `spacing` to the `target`
    spacing as predict does it (float16 in [0, 1]: 2 bytes a voxel in memory), and their labels (nearest)."""
    import torch

    size = grid_size(image.shape[1:], spacing, target)
    resampled = np.empty((image.shape[0], *size), dtype=np.float16)
    with torch.inference_mode():
        for start in range(0, image.shape[0], chunk):
            batch = torch.from_numpy(scale_intensities(image[start:start + chunk], *bounds)).unsqueeze(1)
            resampled[start:start + chunk] = resample_images(batch, size)[:, 0].clamp_(0, 1).numpy()
    return resampled, np.ascontiguousarray(resample_labels(label, size))


# -------------------------------------------------------------------------------------------------- tiles


def tile_starts(length: int, tile: int, overlap: float = TILE_OVERLAP) -> list[int]:
    """Start offsets of `tile`-long windows covering `length` (>= tile) with at least `overlap` between
    neighbours, evenly spread from 0 to length - tile (nnU-Net's sliding window)."""
    if length <= tile:
        return [0]
    step = tile * (1.0 - overlap)
    count = math.ceil((length - tile) / step) + 1
    return [int(round(i * (length - tile) / (count - 1))) for i in range(count)]


def tile_corners(height: int, width: int, tile: int, overlap: float = TILE_OVERLAP) -> list[tuple[int, int]]:
    """(row, column) of every tile covering a height x width grid already padded to at least one tile."""
    return [(y, x) for y in tile_starts(height, tile, overlap) for x in tile_starts(width, tile, overlap)]


@functools.lru_cache(maxsize=8)
def gaussian_importance(tile: int, sigma_scale: float = 0.125) -> np.ndarray:
    """(tile, tile) float32 weights, 1 at the centre falling off as a Gaussian (sigma = tile / 8, nnU-Net's):
    tile borders, where the network sees least context, count least where tiles overlap."""
    centre = (tile - 1) / 2.0
    profile = np.exp(-0.5 * ((np.arange(tile) - centre) / (sigma_scale * tile)) ** 2)
    weights = np.outer(profile, profile).astype(np.float32)
    weights.setflags(write=False)
    return weights


def pad_margins(length: int, tile: int) -> tuple[int, int]:
    """(before, after) padding that centres a `length` axis shorter than `tile` in one tile (0, 0 otherwise)."""
    missing = max(0, tile - length)
    return missing // 2, missing - missing // 2


# ---------------------------------------------------------------------------------------------- intensities


def intensity_bounds(array: np.ndarray, prep: Preprocessing) -> tuple[float, float]:
    """The intensity range mapped to [0, 1]: the CT window, or the MR volume's percentiles."""
    if prep.modality == "CT":
        if prep.window == AUTO:
            raise SwinsegError("the card's CT window is 'auto', which training resolves from its data; "
                               "use a trained checkpoint, or give the card a window [low, high]")
        if prep.window is None:
            raise SwinsegError("the card's CT preprocessing has no window [low, high]")
        return prep.window  # type: ignore[return-value]
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


# ------------------------------------------------------------------- whole-slice resize (the published path)


@functools.lru_cache(maxsize=64)
def _zoom_matrix(n_in: int, n_out: int, order: int) -> np.ndarray:
    if n_in < 1 or n_out < 1:
        raise ValueError(f"zoom sizes must be positive, got {n_in} -> {n_out}")
    if n_in == n_out:
        return np.eye(n_in)
    import scipy.ndimage

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
    import scipy.sparse

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
