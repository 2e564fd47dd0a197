"""What the network trains on: slices (Synapse .npz, whole slices in memory) and crops of resampled slices, with
foreground oversampling, 2.5-D context and the augmentation drawn from a Generator seeded by (seed, epoch,
index); EpochSampler numbers the epoch into the indices so one loader with persistent workers serves every
epoch."""
from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from swinseg.choices import AUGMENTATIONS
from swinseg.defaults import FOREGROUND_OVERSAMPLING, SEED
from swinseg.errors import SwinsegError
from swinseg.orientation import Layout
from swinseg.preprocess import (
    PreparedVolume,
    context_indices,
    resample_to_grid,
    scale_intensities,
    slice_stack,
)
from swinseg.training.augment import StrongBounds, augment_slice, resize_pair, strong_sample

if TYPE_CHECKING:
    pass



FOREGROUND_LOCATIONS = 10_000  # voxels remembered per class and case for that
CROP_MARGIN = 1 / 4  # how far (in tiles) a training crop may reach beyond its slice


class NpzSlices:
    """Training slices stored one per .npz file (Synapse `train_npz`, CASE_sliceNNN). With `context` k, an
    image is the slice between its k neighbours of the same case on either side, (2k+1, H, W), found by slice
    number among the listed slices (the case's first and last listed slices repeat beyond its ends)."""

    def __init__(self, folder: Path, names: Sequence[str], context: int = 0) -> None:
        self.folder, self.names, self.context = Path(folder), list(names), int(context)
        self.neighbours = _slice_neighbours(self.names, self.context) if self.context else None

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        image, label = self._read(index)
        if self.neighbours is None:
            return image, label
        stack = [image if other == index else self._read(other)[0] for other in self.neighbours[index]]
        return np.stack(stack), label

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.folder / f"{self.names[index]}.npz"
        try:
            with np.load(path) as data:
                return np.asarray(data["image"], dtype=np.float32), np.asarray(data["label"])
        except (OSError, KeyError, ValueError) as error:
            raise SwinsegError(f"{path}: not a readable slice file with 'image' and 'label' ({error})") from error


def _slice_neighbours(names: Sequence[str], context: int) -> list[np.ndarray]:
    """For each CASE_sliceNNN name, the indices (into `names`) of its case's slices NNN-k .. NNN+k in slice
    order (clipped at the case's ends); a name without a slice number is its own neighbour."""
    by_case: dict[str, list[tuple[int, int]]] = {}
    for index, name in enumerate(names):
        case, _, number = name.rpartition("_slice")
        key = case if case and number.isdigit() else name
        by_case.setdefault(key, []).append((int(number) if case and number.isdigit() else 0, index))
    neighbours: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(names)
    for entries in by_case.values():
        order = np.asarray([index for _, index in sorted(entries)], dtype=np.int64)
        for position, picks in enumerate(context_indices(np.arange(len(order)), len(order), context)):
            neighbours[order[position]] = order[picks]
    return neighbours


@dataclass
class LoadedCase:
    """An nnU-Net case in memory, laid out by swinseg.preprocess as predict lays it out: raw intensities and
    labels (D, H, W) with the slicing plane first, the intensity range that maps to [0, 1] (set once the
    preprocessing is resolved), and the voxel spacing (slice axis, rows, columns) in mm."""

    name: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float, float]
    bounds: tuple[float, float] = (0.0, 1.0)

    @property
    def in_plane_spacing(self) -> tuple[float, float]:
        return self.spacing[1], self.spacing[2]

    def normalized(self) -> np.ndarray:
        return scale_intensities(self.image, *self.bounds)

    def prepared(self) -> PreparedVolume:
        """The image as predict's data path holds it (identity restore: this is already the slice layout)."""
        return PreparedVolume(self.image, self.bounds, self.in_plane_spacing, Layout.identity(self.spacing))


class MemorySlices:
    """Training slices cut on the fly from volumes held in memory (raw dtype, normalised per slice); with
    `context` k, (2k+1, H, W) stacks of each slice and its neighbours (preprocess.slice_stack, as predict)."""

    def __init__(self, cases: Sequence[LoadedCase], context: int = 0) -> None:
        self.cases, self.context = list(cases), int(context)
        self.index = [(c, z) for c, case in enumerate(self.cases) for z in range(case.image.shape[0])]
        self.names = [f"{self.cases[c].name}_slice{z:03d}" for c, z in self.index]

    def __len__(self) -> int:
        return len(self.index)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        c, z = self.index[index]
        case = self.cases[c]
        return scale_intensities(slice_stack(case.image, z, z + 1, self.context)[0], *case.bounds), case.label[z]


@dataclass
class GridCase:
    """A training case on the target-spacing grid: normalised image (D, H', W') float16 in [0, 1], labels
    uint8, and up to FOREGROUND_LOCATIONS voxels (z, y, x) of each foreground class present."""

    name: str
    image: np.ndarray
    label: np.ndarray
    foreground: dict[int, np.ndarray]


def to_grid_case(case: LoadedCase, target: tuple[float, float], seed: int) -> GridCase:
    """`case` resampled once to the `target` in-plane spacing (images bilinear, labels nearest; slices stay
    slices), with its foreground locations drawn from `seed`."""
    image, label = resample_to_grid(case.image, case.bounds, case.label, case.in_plane_spacing, target)
    rng = np.random.default_rng((seed, zlib_crc(case.name)))
    foreground = {}
    for value in np.unique(label):
        if value == 0:
            continue
        where = np.argwhere(label == value).astype(np.int32)
        if len(where) > FOREGROUND_LOCATIONS:
            where = where[np.sort(rng.choice(len(where), FOREGROUND_LOCATIONS, replace=False))]
        foreground[int(value)] = where
    return GridCase(case.name, image, label, foreground)


def zlib_crc(text: str) -> int:
    """A stable 32-bit number for a name (Python's hash() changes between processes)."""
    return zlib.crc32(text.encode("utf-8"))


class GridSlices:
    """Training samples cut from cases on the target-spacing grid: each index is a slice; `crop` draws an
    img_size crop of it (padded with 0 = background where the slice is smaller) or, with probability
    `oversample`, a crop centred on a voxel of a randomly chosen foreground class of the case (then from the
    slice of that voxel: `names[index]` names the index's slice, the sample may come from another of the case)."""

    def __init__(self, cases: Sequence[GridCase], oversample: float = FOREGROUND_OVERSAMPLING,
                 context: int = 0) -> None:
        if not 0.0 <= oversample <= 1.0:
            raise SwinsegError(f"--oversample-foreground must be in [0, 1], got {oversample}")
        self.cases, self.oversample, self.context = list(cases), float(oversample), int(context)
        self.index = [(c, z) for c, case in enumerate(self.cases) for z in range(case.image.shape[0])]
        self.names = [f"{self.cases[c].name}_slice{z:03d}" for c, z in self.index]

    def __len__(self) -> int:
        return len(self.index)

    def crop(self, index: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(image float32 (S, S) or (2k+1, S, S), label (S, S)) crops for sample `index`, drawn from `rng`.
        A crop may reach CROP_MARGIN tiles beyond the slice (filled with 0 = background), and a slice smaller
        than a tile may sit anywhere in it, so the network sees the anatomy shifted and cut off as prediction
        tiles show it."""
        c, z, row, col = self.locate(index, size, rng)
        image, label = self.slice(c, z)
        return _window(image, row, col, size).astype(np.float32), _window(label, row, col, size)

    def slice(self, c: int, z: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W) float16, or its (2k+1, H, W) context stack, and labels of slice z of case c."""
        case = self.cases[c]
        return slice_stack(case.image, z, z + 1, self.context)[0], case.label[z]

    def locate(self, index: int, size: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(case, slice, row, column) of the top left corner of sample `index`'s crop (see `crop`)."""
        c, z = self.index[index]
        case = self.cases[c]
        height, width = case.image.shape[1:]
        margin = int(size * CROP_MARGIN)
        rows = (min(0, height - size) - margin, max(0, height - size) + margin)  # crop start range
        cols = (min(0, width - size) - margin, max(0, width - size) + margin)
        if case.foreground and rng.random() < self.oversample:
            classes = sorted(case.foreground)
            locations = case.foreground[classes[int(rng.integers(len(classes)))]]
            z, y, x = (int(v) for v in locations[int(rng.integers(len(locations)))])
            row = min(max(y - size // 2, rows[0]), rows[1])
            col = min(max(x - size // 2, cols[0]), cols[1])
        else:
            row, col = int(rng.integers(rows[0], rows[1] + 1)), int(rng.integers(cols[0], cols[1] + 1))
        return c, z, row, col


def _window(array: np.ndarray, row: int, col: int, size: int) -> np.ndarray:
    """`array[..., row:row+size, col:col+size]` with 0 where the window leaves the array."""
    out = np.zeros((*array.shape[:-2], size, size), dtype=array.dtype)
    top, left = max(row, 0), max(col, 0)
    bottom, right = min(row + size, array.shape[-2]), min(col + size, array.shape[-1])
    if bottom > top and right > left:
        out[..., top - row:bottom - row, left - col:right - col] = array[..., top:bottom, left:right]
    return out


class EpochSampler(torch.utils.data.DistributedSampler):
    """DistributedSampler whose indices carry the epoch (`epoch * len(dataset) + i`, see SliceDataset): workers
    of a persistent loader need not be told the epoch."""

    def __iter__(self) -> Iterator[int]:
        offset = self.epoch * len(self.dataset)  # type: ignore[arg-type]
        return (offset + index for index in super().__iter__())


class SliceDataset(torch.utils.data.Dataset):
    """Training samples as the network takes them: dict(image=(1 or 2k+1, S, S) float32, label=(S, S) int64,
    name=str), S = img_size: whole slices resized to S (Npz/MemorySlices, the published path) or S crops of
    slices on the target grid (GridSlices). A numpy Generator seeded by (seed, epoch, index) draws the crop and
    the `augment`ation: "reference" (the published one), "strong" (nnU-Net's, swinseg.training.augment) or "none".
    Item `epoch * len(self) + i` is sample i of that epoch (after `set_epoch`'s), so one loader with persistent
    workers serves every epoch (`EpochSampler` numbers them)."""

    def __init__(self, source: NpzSlices | MemorySlices | GridSlices, img_size: int, *,
                 augment: str = "reference", seed: int = SEED, strong_bounds: StrongBounds = StrongBounds()) -> None:
        if augment not in AUGMENTATIONS:
            raise SwinsegError(f"--augment {augment!r}: expected one of {', '.join(AUGMENTATIONS)}")
        self.source, self.img_size, self.augment, self.seed = source, int(img_size), augment, int(seed)
        self.strong_bounds = strong_bounds
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def sample(self, index: int, epoch: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The numpy (image, label) pair of `index` in `epoch` (default: set_epoch's) after cropping or resizing,
        and augmentation."""
        rng = np.random.default_rng((self.seed, self.epoch if epoch is None else int(epoch), int(index)))
        size = self.img_size
        if isinstance(self.source, GridSlices):
            if self.augment == "strong":
                c, z, row, col = self.source.locate(index, size, rng)
                image, label = self.source.slice(c, z)
                centre = (row + (size - 1) / 2.0, col + (size - 1) / 2.0)
                return strong_sample(image.astype(np.float32), label, rng, size, centre, (1.0, 1.0), self.strong_bounds)
            image, label = self.source.crop(index, size, rng)
            return augment_slice(image, label, rng) if self.augment == "reference" else (image, label)
        image, label = self.source.load(index)
        if self.augment == "strong":
            height, width = image.shape[-2:]
            return strong_sample(image, label, rng, size, ((height - 1) / 2.0, (width - 1) / 2.0),
                                 (height / size, width / size), self.strong_bounds)
        if self.augment == "reference":
            image, label = augment_slice(image, label, rng)
        return resize_pair(image, label, size)

    def __getitem__(self, item: int) -> dict[str, Any]:
        later, index = divmod(int(item), len(self.source))
        image, label = self.sample(index, self.epoch + later)
        image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        return {
            "image": image.unsqueeze(0) if image.ndim == 2 else image,
            "label": torch.from_numpy(np.ascontiguousarray(label).astype(np.int64)),
            "name": self.source.names[index],
        }
