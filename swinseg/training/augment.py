"""Training augmentation; the caller passes a numpy Generator per sample, so every sample is reproducible.

- `reference`: the published Swin-Unet augmentation, exactly (same operations, same interpolation), then the
  whole-slice resize of the pair (`resize_pair`);
- `strong`: what makes nnU-Net robust to other scanners, drawn with nnU-Net's 2-D probabilities: scaling
  (0.7-1.4) and rotation (any angle), a smooth grid deformation, mirroring, Gaussian noise and blur,
  brightness, contrast, simulated low resolution and gamma. The spatial part is one coordinate map, so crop,
  resize, scaling, rotation, deformation and mirroring cost a single bilinear (image) and nearest (label)
  lookup into the source slice; anatomy that moves into the sample comes from around it, not from padding.
  `StrongBounds` carries what the plan and the recipe bound: the mirror axes, the largest rotation and the
  per-class intensity shift (`class_shift`: each labelled structure brightened or darkened on its own, as a
  contrast phase or another MR sequence does, so that shape and context, not one organ's grey level, name it).

Images may carry 2.5-D context channels, (C, H, W): every channel gets the same transform.
"""
from __future__ import annotations

import dataclasses
import functools

import numpy as np
import scipy.ndimage

from swinseg.preprocess import resize_array, zoom_matrix

# --------------------------------------------------------------------------------------------- reference


@functools.lru_cache(maxsize=96)
def _rotation_gather(shape: tuple[int, int], angle: int) -> np.ndarray:
    """Flat source index + 1 of every output pixel (0 = outside), as scipy's nearest rotation picks them."""
    index = np.arange(1, shape[0] * shape[1] + 1, dtype=np.int64).reshape(shape)
    gather = scipy.ndimage.rotate(index, angle, order=0, reshape=False).astype(np.int32)
    gather.setflags(write=False)
    return gather


def rotate_nearest(array: np.ndarray, angle: int) -> np.ndarray:
    """`scipy.ndimage.rotate(array, angle, order=0, reshape=False)` for each 2-D slice of (..., H, W), as a
    cached gather."""
    flat = array.reshape(-1, array.shape[-2] * array.shape[-1])
    padded = np.concatenate([np.zeros((len(flat), 1), dtype=array.dtype), flat], axis=1)
    return padded[:, _rotation_gather(array.shape[-2:], int(angle))].reshape(array.shape)


def augment_slice(image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The reference's random part: with p=0.5 rot90 by k in 0..3 and a flip along a random axis; otherwise
    with p=0.5 a rotation by an integer angle in [-20, 19] degrees, nearest interpolation, same size."""
    if rng.random() > 0.5:
        k, axis = int(rng.integers(0, 4)), int(rng.integers(0, 2))
        return (np.flip(np.rot90(image, k, axes=(-2, -1)), axis - 2),
                np.flip(np.rot90(label, k, axes=(-2, -1)), axis - 2))
    if rng.random() > 0.5:
        angle = int(rng.integers(-20, 20))
        return rotate_nearest(image, angle), rotate_nearest(label, angle)
    return image, label


def resize_pair(image: np.ndarray, label: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image (float32, cubic) and label (nearest) resized to size x size exactly as scipy.ndimage.zoom does."""
    image = resize_array(np.asarray(image, dtype=np.float32), size, order=3)
    return image, resize_array(label, size, order=0)


# ------------------------------------------------------------------------------------------------ strong

# nnU-Net's 2-D defaults (probabilities per sample, ranges)
P_SCALE, SCALE_RANGE = 0.2, (0.7, 1.4)
P_ROTATE = 0.2  # uniform angle in [-180, 180) degrees
P_DEFORM, DEFORM_GRID, DEFORM_SHIFT = 0.2, 4, 0.03  # coarse grid nodes, shift s.d. in sample widths
P_MIRROR = 0.5  # per axis
P_NOISE, NOISE_SD = 0.1, (0.0, 0.05)  # intensities are in [0, 1] (a 400 HU window: up to 20 HU s.d.)
P_BLUR, BLUR_SIGMA = 0.2, (0.5, 1.0)
P_BRIGHTNESS, BRIGHTNESS_RANGE = 0.15, (0.75, 1.25)
P_CONTRAST, CONTRAST_RANGE = 0.15, (0.75, 1.25)
P_LOW_RES, LOW_RES_ZOOM = 0.25, (0.5, 1.0)
P_GAMMA_INVERTED, P_GAMMA, GAMMA_RANGE = 0.1, 0.3, (0.7, 1.5)
P_CLASS_SHIFT = 0.2  # per sample; then each foreground class present gets its own uniform shift


@dataclasses.dataclass(frozen=True)
class StrongBounds:
    """What bounds the strong augmentation: `mirror_axes`, the slice axes (0 rows, 1 columns) a mirroring may
    flip; `max_rotation` in degrees; `class_shift`, the largest per-class intensity shift as a share of the
    normalised [0, 1] range (0: none; CT window [-125, 275] HU: 0.375 = 150 HU)."""

    mirror_axes: tuple[int, ...] = (0, 1)
    max_rotation: float = 180.0
    class_shift: float = 0.0


def strong_sample(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, size: int,
                  centre: tuple[float, float], step: tuple[float, float],
                  bounds: StrongBounds = StrongBounds()) -> tuple[np.ndarray, np.ndarray]:
    """A size x size strongly augmented sample of a source slice: `image` (H, W) or (C, H, W) float32 in
    [0, 1], `label` (H, W). Without any transform the sample's pixel (i, j) is the source point
    `centre + step * (i - (size - 1) / 2, j - (size - 1) / 2)` (a crop: step 1; a whole-slice resize:
    step = source size / size); outside the source the image is 0 (background) and the label 0."""
    rows, cols = _source_coordinates(rng, size, centre, step, bounds.mirror_axes, bounds.max_rotation)
    sampled = _bilinear(image.reshape(-1, *image.shape[-2:]), rows, cols)
    labels = _nearest(label, rows, cols)
    if bounds.class_shift > 0 and rng.random() < P_CLASS_SHIFT:
        sampled = _shift_classes(sampled, labels, bounds.class_shift, rng)
    return _intensity_transforms(sampled, rng).reshape(*image.shape[:-2], size, size), labels


def _shift_classes(image: np.ndarray, labels: np.ndarray, largest: float, rng: np.random.Generator) -> np.ndarray:
    """(C, S, S): each foreground class of `labels` moved by its own uniform shift in [-largest, largest],
    clipped to [0, 1] as the CT window or MR percentiles clip a real scan's."""
    labels = labels.astype(np.intp, copy=False)  # Synapse npz slices store labels as float32
    classes = np.unique(labels)
    classes = classes[classes > 0]
    shifts = np.zeros(int(labels.max()) + 1, dtype=np.float32)
    shifts[classes] = rng.uniform(-largest, largest, len(classes))
    return np.clip(image + shifts[labels], 0.0, 1.0)


def _source_coordinates(rng: np.random.Generator, size: int, centre: tuple[float, float],
                        step: tuple[float, float], mirror_axes: tuple[int, ...] = (0, 1),
                        max_rotation: float = 180.0) -> np.ndarray:
    """(2, size, size) source (row, column) of every sample pixel: scaling, rotation, deformation, mirroring."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    rows, cols = np.meshgrid(offsets, offsets, indexing="ij")
    if rng.random() < P_DEFORM:
        shifts = rng.normal(0.0, DEFORM_SHIFT * size, (2, DEFORM_GRID, DEFORM_GRID))
        spline = zoom_matrix(DEFORM_GRID, size, 3)  # cubic upsampling of the coarse grid, as two matmuls
        rows, cols = rows + spline @ shifts[0] @ spline.T, cols + spline @ shifts[1] @ spline.T
    scale = rng.uniform(*SCALE_RANGE) if rng.random() < P_SCALE else 1.0
    limit = np.deg2rad(max_rotation)
    angle = rng.uniform(-limit, limit) if rng.random() < P_ROTATE else 0.0
    flip_rows = -1.0 if rng.random() < P_MIRROR and 0 in mirror_axes else 1.0
    flip_cols = -1.0 if rng.random() < P_MIRROR and 1 in mirror_axes else 1.0
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    rows, cols = rows * flip_rows, cols * flip_cols
    source_rows = centre[0] + step[0] * (cos * rows - sin * cols)
    source_cols = centre[1] + step[1] * (sin * rows + cos * cols)
    return np.stack([source_rows, source_cols])


def _bilinear(channels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """(C, S, S) float32: `channels` (C, H, W) at the points (rows, cols), bilinear, 0 beyond the edges
    (scipy.ndimage.map_coordinates order 1, mode "grid-constant", as one gather for all channels)."""
    height, width = channels.shape[-2:]
    padded = np.pad(np.asarray(channels, dtype=np.float32), ((0, 0), (1, 1), (1, 1)))
    top, left = np.floor(rows), np.floor(cols)
    down, right = (rows - top).astype(np.float32), (cols - left).astype(np.float32)
    r0 = np.clip(top.astype(np.intp) + 1, 0, height + 1)
    r1 = np.clip(top.astype(np.intp) + 2, 0, height + 1)
    c0 = np.clip(left.astype(np.intp) + 1, 0, width + 1)
    c1 = np.clip(left.astype(np.intp) + 2, 0, width + 1)
    flat, stride = padded.reshape(len(padded), -1), width + 2

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        return np.take(flat, (r * stride + c).ravel(), axis=1).reshape(len(flat), *rows.shape)

    upper = at(r0, c0) * (1 - right) + at(r0, c1) * right
    lower = at(r1, c0) * (1 - right) + at(r1, c1) * right
    return upper * (1 - down) + lower * down


def _nearest(label: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`label` (H, W) at the nearest pixel of each point, 0 beyond the edges."""
    r, c = np.rint(rows).astype(np.intp), np.rint(cols).astype(np.intp)
    inside = (r >= 0) & (r < label.shape[0]) & (c >= 0) & (c < label.shape[1])
    picked = label[np.clip(r, 0, label.shape[0] - 1), np.clip(c, 0, label.shape[1] - 1)]
    return np.where(inside, picked, np.zeros((), dtype=label.dtype))


def _intensity_transforms(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(C, S, S) float32 after nnU-Net's intensity transforms, in its order, the same for every channel."""
    if rng.random() < P_NOISE:
        image = image + np.float32(rng.uniform(*NOISE_SD)) * rng.standard_normal(image.shape, dtype=np.float32)
    if rng.random() < P_BLUR:
        sigma = rng.uniform(*BLUR_SIGMA)
        image = np.stack([scipy.ndimage.gaussian_filter(channel, sigma) for channel in image])
    if rng.random() < P_BRIGHTNESS:
        image = image * np.float32(rng.uniform(*BRIGHTNESS_RANGE))
    if rng.random() < P_CONTRAST:
        low, high, mean = image.min(), image.max(), image.mean()
        image = np.clip((image - mean) * np.float32(rng.uniform(*CONTRAST_RANGE)) + mean, low, high)
    if rng.random() < P_LOW_RES:
        image = _low_resolution(image, rng.uniform(*LOW_RES_ZOOM))
    if rng.random() < P_GAMMA_INVERTED:
        image = -_gamma(-image, rng)
    if rng.random() < P_GAMMA:
        image = _gamma(image, rng)
    return np.ascontiguousarray(image, dtype=np.float32)


def _low_resolution(image: np.ndarray, zoom: float) -> np.ndarray:
    """Each channel downsampled by `zoom` (nearest) and back to its size (linear): a coarser scanner."""
    size = image.shape[-1]
    small = max(1, int(round(size * zoom)))
    picks = np.minimum(((np.arange(small) + 0.5) * size / small).astype(np.int64), size - 1)
    coarse = image[:, picks[:, None], picks[None, :]]
    back = (np.arange(size) + 0.5) * small / size - 0.5
    grid = np.stack(np.meshgrid(back, back, indexing="ij"))
    return np.stack([scipy.ndimage.map_coordinates(channel, grid, order=1, mode="nearest", prefilter=False)
                     for channel in coarse])


def _gamma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gamma on the sample's own range: < 1 or > 1 with equal chance, as nnU-Net draws it."""
    gamma = rng.uniform(GAMMA_RANGE[0], 1.0) if rng.random() < 0.5 else rng.uniform(1.0, GAMMA_RANGE[1])
    low, high = image.min(), image.max()
    if high - low < 1e-7:
        return image
    return ((image - low) / (high - low)) ** np.float32(gamma) * (high - low) + low
