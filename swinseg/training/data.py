"""Training inputs: the cases of a dataset folder (swinseg.training.datasets) read through swinseg.preprocess exactly as
predict reads scans (orientation, plane), the samples the network trains on and the held-out volumes it is
validated on. What to do with the data (target spacing, plane, intensities) is decided by swinseg.plan from the
cases read here; this module builds what it is told.

With a target spacing the slices are resampled to it once at load time and training samples are random img_size
crops, a share of them centred on a voxel of a foreground class (nnU-Net's oversampling); without one (the
published path) whole slices are resized. With `context_slices` k in the card, every sample carries the k
neighbours of its slice on either side as channels (preprocess.slice_stack, as predict feeds them). The
augmentation (swinseg.training.augment: the reference one, or nnU-Net's strong one) then applies, with a
numpy Generator per sample seeded from (seed, epoch, index): runs are reproducible whatever the number of
DataLoader workers or processes, and a resumed run sees the same samples.
"""
from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from swinseg.choices import AUGMENTATIONS
from swinseg.config import Preprocessing
from swinseg.defaults import FOREGROUND_OVERSAMPLING, SEED
from swinseg.errors import SwinsegError
from swinseg.io import check_same_geometry, itk, oriented_spacing, read_volume
from swinseg.labels import label_map
from swinseg.preprocess import (
    PreparedVolume,
    context_indices,
    grid_size,
    intensity_bounds,
    prepare_volume,
    resample_to_grid,
    scale_intensities,
    slice_axis,
    slice_stack,
)
from swinseg.training.augment import augment_slice, resize_pair, strong_sample
from swinseg.training.datasets import (
    TEST_FOLDER,
    TEST_SUFFIX,
    TRAIN_FOLDER,
    CaseFiles,
    NnunetDataset,
    SynapseDataset,
    is_nnunet,
    is_synapse,
    open_nnunet,
    open_synapse,
    shorten,
    split_cases,
)

if TYPE_CHECKING:
    from swinseg.plan import Plan

Progress = Callable[[int, int, str], None]  # (done, total, current item name)

FOREGROUND_LOCATIONS = 10_000  # voxels remembered per class and case for that
CROP_MARGIN = 1 / 4  # how far (in tiles) a training crop may reach beyond its slice

# ------------------------------------------------------------------------------------------- slice sources


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
        return PreparedVolume(self.image, self.bounds, self.in_plane_spacing, lambda array: array)


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
                 augment: str = "reference", seed: int = SEED, mirror_axes: tuple[int, ...] = (0, 1),
                 max_rotation: float = 180.0) -> None:
        if augment not in AUGMENTATIONS:
            raise SwinsegError(f"--augment {augment!r}: expected one of {', '.join(AUGMENTATIONS)}")
        self.source, self.img_size, self.augment, self.seed = source, int(img_size), augment, int(seed)
        self.mirror_axes, self.max_rotation = tuple(mirror_axes), float(max_rotation)  # the strong augmentation's
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
                return strong_sample(image.astype(np.float32), label, rng, size, centre, (1.0, 1.0),
                                     self.mirror_axes, self.max_rotation)
            image, label = self.source.crop(index, size, rng)
            return augment_slice(image, label, rng) if self.augment == "reference" else (image, label)
        image, label = self.source.load(index)
        if self.augment == "strong":
            height, width = image.shape[-2:]
            return strong_sample(image, label, rng, size, ((height - 1) / 2.0, (width - 1) / 2.0),
                                 (height / size, width / size), self.mirror_axes, self.max_rotation)
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


# ------------------------------------------------------------------------------------------------- volumes


@dataclass
class VolumeCase:
    """A validation/test volume as predict's data path holds it (`prepared`: slices, intensity range, in-plane
    spacing when known) and its labels (D, H, W) uint8 in the same layout."""

    name: str
    prepared: PreparedVolume
    label: np.ndarray


class H5Volumes(Sequence[VolumeCase]):
    """Volumes stored as Synapse `test_vol_h5/CASE.npy.h5` files (normalised images), read on access."""

    def __init__(self, folder: Path, names: Sequence[str]) -> None:
        self.folder, self.names = Path(folder), list(names)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> VolumeCase:  # type: ignore[override]
        import h5py

        name = self.names[index]
        path = self.folder / f"{name}{TEST_SUFFIX}"
        try:
            with h5py.File(path, "r") as data:
                image = np.asarray(data["image"], dtype=np.float32)
                label = np.asarray(data["label"])
                spacing = tuple(float(s) for s in data.attrs["spacing"]) if "spacing" in data.attrs else None
        except (OSError, KeyError) as error:
            raise SwinsegError(f"{path}: not a readable volume file with 'image' and 'label' ({error})") from error
        if image.ndim != 3 or image.shape != label.shape:
            raise SwinsegError(f"{path}: image {image.shape} and label {label.shape} must be equal 3-D shapes")
        in_plane = (spacing[1], spacing[2]) if spacing is not None and len(spacing) == 3 else None
        return VolumeCase(name, PreparedVolume(image, (0.0, 1.0), in_plane, lambda array: array),
                          _label_array(label, path))


class MemoryVolumes(Sequence[VolumeCase]):
    """Validation volumes from cases held in memory (raw intensities, normalised batch by batch by predict)."""

    def __init__(self, cases: Sequence[LoadedCase]) -> None:
        self.cases = list(cases)
        self.names = [case.name for case in self.cases]

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> VolumeCase:  # type: ignore[override]
        case = self.cases[index]
        return VolumeCase(case.name, case.prepared(), case.label)


def _label_array(label: np.ndarray, where: Path | str) -> np.ndarray:
    """Labels as uint8; SwinsegError for non-integer or out-of-range values."""
    if label.dtype == np.uint8:
        return label
    label = label_map(label, where)
    if label.size and label.max() > 255:
        raise SwinsegError(f"{where}: labels must be integers 0-255")
    return label.astype(np.uint8)


def load_case(case: CaseFiles, prep: Preprocessing, num_classes: int | None = None) -> LoadedCase:
    """Read an image/label pair, check that they agree (shape, geometry, label values) and lay both out with
    swinseg.preprocess.prepare_volume (the card's orientation and plane, as predict does). The intensity range
    is left for `set_bounds` (it may depend on the whole dataset). SwinsegError naming the files on any
    disagreement."""

    image = read_volume(case.image)
    label = read_volume(case.label)
    if image.ndim != 3 or label.ndim != 3:
        raise SwinsegError(f"{case.image.name}: image and label must be 3-D volumes")
    if image.array.shape != label.array.shape:
        raise SwinsegError(f"{case.image.name} {image.array.shape} and {case.label.name} {label.array.shape}: "
                           f"shapes differ")
    check_same_geometry(image, label)
    label_array = _label_array(np.asarray(label.array), case.label.name)
    if num_classes is not None and label_array.size and label_array.max() >= num_classes:
        raise SwinsegError(f"{case.label.name}: label {int(label_array.max())} found but dataset.json has "
                           f"{num_classes} classes (0-{num_classes - 1})")
    image_slices = prepare_volume(image, prep, intensities=False).slices
    label_slices = prepare_volume(label.with_array(label_array), prep, intensities=False).slices
    spacing = oriented_spacing(image, prep.orientation)
    axis = slice_axis(prep.orientation, prep.plane)
    ordered = (spacing[axis], *(s for a, s in enumerate(spacing) if a != axis))
    return LoadedCase(case.name, np.ascontiguousarray(_compact(image_slices)), np.ascontiguousarray(label_slices),
                      ordered)  # type: ignore[arg-type]


def set_bounds(cases: Sequence[LoadedCase], prep: Preprocessing) -> None:
    """Give every case the intensity range of `prep` (CT window, or its own MR percentiles)."""
    for case in cases:
        case.bounds = intensity_bounds(case.image, prep)


def _compact(image: np.ndarray) -> np.ndarray:
    """Intensities in the smallest exact type for memory: int16 when the values are integers in range
    (CT stored as scaled float64 in NIfTI), else float32 (what normalisation computes in anyway)."""
    if image.dtype.itemsize <= 2 and image.dtype.kind in "iu":
        return image
    if image.dtype.kind in "iu" or np.array_equal(image, np.rint(image)):
        if image.size and -32768 <= image.min() and image.max() <= 32767:
            return image.astype(np.int16, order="C")
    return image.astype(np.float32, order="C")


def load_cases(dataset: NnunetDataset, names: Sequence[str], prep: Preprocessing,
               progress: Progress | None = None) -> list[LoadedCase]:
    """Load the named cases into memory; all problems are collected and raised as one SwinsegError."""
    by_name = {case.name: case for case in dataset.cases}
    num_classes = len(dataset.classes) if dataset.classes else None
    loaded, problems = [], []
    for done, name in enumerate(names):
        if progress:
            progress(done, len(names), name)
        try:
            loaded.append(load_case(by_name[name], prep, num_classes))
        except SwinsegError as error:
            problems.append(str(error))
    if progress:
        progress(len(names), len(names), "")
    if problems:
        raise SwinsegError(f"{dataset.root}: {len(problems)} bad cases: {shorten(problems, '; ')}")
    return loaded


def check_fits_in_memory(dataset: NnunetDataset, names: Sequence[str], share: float = 0.8) -> None:
    """Refuse, before reading any voxel, to load cases whose arrays (int16 image + uint8 label, at least 3 bytes
    a voxel) would take more than `share` of the memory available now; the Synapse layout streams instead."""
    sitk = itk()
    by_name = {case.name: case for case in dataset.cases}
    voxels = 0
    for name in names:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(by_name[name].image))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # unreadable files are reported by load_cases, by name
        voxels += int(np.prod(reader.GetSize()))
    needed, available = 3 * voxels, _available_memory()
    if available and needed > share * available:
        raise SwinsegError(
            f"{dataset.root}: {len(names)} cases need at least {needed / 2**30:.1f} GiB in memory but "
            f"{available / 2**30:.1f} GiB are available; convert the dataset with `swinseg preprocess` "
            "and train on the result (its slices are read from disk)"
        )


def check_grid_fits_in_memory(root: Path, cases: Sequence[LoadedCase], target: tuple[float, float],
                              share: float = 0.8) -> None:
    """Refuse to resample cases whose target-grid copies (float16 image + uint8 label) would not fit in the
    memory available now (a fine target spacing for coarse scans multiplies the voxels)."""

    needed = sum(3 * case.image.shape[0] * int(np.prod(grid_size(case.image.shape[1:], case.in_plane_spacing,
                                                                  target))) for case in cases)
    available = _available_memory()
    if available and needed > share * available:
        raise SwinsegError(
            f"{root}: resampled to {target[0]:g}x{target[1]:g} mm the {len(cases)} training cases need "
            f"{needed / 2**30:.1f} GiB but {available / 2**30:.1f} GiB are available; choose a coarser --spacing"
        )


def _available_memory() -> int | None:
    """MemAvailable in bytes from /proc/meminfo: Linux only; elsewhere None, and the memory checks are skipped."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


# ------------------------------------------------------------------------------------------ training data


@dataclass
class TrainingCases:
    """A dataset folder read for training, before anything is decided from it (swinseg.plan decides): the
    split into training and validation cases and, for the nnU-Net layout, every case in memory laid out as
    predict lays it out, with dataset.json's channel name. The Synapse layout is streamed from disk later."""

    layout: str  # "synapse" | "nnunet"
    root: Path
    classes: tuple[str, ...] | None  # from dataset.json, None when the folder does not name them
    train_cases: list[str]
    validation_cases: list[str]
    channel_name: str | None = None
    loaded: dict[str, LoadedCase] = dataclasses.field(default_factory=dict)  # nnU-Net: the cases by name
    synapse: SynapseDataset | None = None

    @property
    def training(self) -> list[LoadedCase]:
        """The loaded training cases (nnU-Net layout; empty for Synapse)."""
        return [self.loaded[name] for name in self.train_cases] if self.loaded else []

    @property
    def training_slices(self) -> int:
        """Training slices: the listed npz slices (Synapse), or the slices of the loaded training cases."""
        if self.synapse is not None:
            return len(self.synapse.train_slices)
        return sum(case.image.shape[0] for case in self.training)


@dataclass
class TrainingData:
    """What training needs from a dataset folder of either layout, and the preprocessing it was built with."""

    layout: str  # "synapse" | "nnunet"
    root: Path
    slices: SliceDataset
    volumes: Sequence[VolumeCase]  # held-out volumes for validation (may be empty)
    classes: tuple[str, ...] | None  # from dataset.json, None when the folder does not name them
    train_cases: list[str]
    validation_cases: list[str]
    preprocessing: Preprocessing  # resolved: spacing, plane and intensities as decided by swinseg.plan
    notes: list[str] = dataclasses.field(default_factory=list)  # how they were decided, for the summary
    plan: Plan | None = None  # the plan that decided them (None: a resumed run takes its card's)


def read_training_cases(path: str | Path, preprocessing: Preprocessing, *, seed: int = SEED,
                        validation_fraction: float = 0.2, validation_cases: Sequence[str] | None = None,
                        lists: str | Path | None = None, progress: Progress | None = None) -> TrainingCases:
    """Open a dataset folder in the Synapse or nnU-Net layout and read what training will use, once.

    Synapse: the slices of train.txt, validation volumes of test_vol.txt (or `validation_cases` of
    test_vol_h5/). nnU-Net: every pair checked and loaded into memory in the orientation and plane of
    `preprocessing`, and a seeded split into training and validation cases (`validation_fraction`, or
    `validation_cases` by name).
    """
    root = Path(path)
    if not root.is_dir():
        raise SwinsegError(f"{root}: dataset folder not found")
    if is_synapse(root):
        return _read_synapse(root, validation_cases, lists)
    if is_nnunet(root):
        dataset = open_nnunet(root)
        train, validation = split_cases(dataset.names, test_fraction=validation_fraction,
                                        test_cases=validation_cases, seed=seed, held_out="val")
        check_fits_in_memory(dataset, train + validation)
        loaded = load_cases(dataset, train + validation, preprocessing, progress)
        return TrainingCases("nnunet", root, dataset.classes, train, validation,
                             read_channel_name(root / "dataset.json"), {case.name: case for case in loaded})
    raise SwinsegError(f"{root}: neither a Synapse folder ({TRAIN_FOLDER}/, {TEST_FOLDER}/) nor an nnU-Net "
                       f"dataset (imagesTr/, labelsTr/, dataset.json)")


def _read_synapse(root: Path, validation_cases: Sequence[str] | None, lists: str | Path | None) -> TrainingCases:
    synapse = open_synapse(root, lists)
    tests = synapse.test_cases
    if validation_cases is not None:
        tests = list(validation_cases)
        missing = [n for n in tests if not (synapse.test_dir / f"{n}{TEST_SUFFIX}").is_file()]
        if missing:
            raise SwinsegError(f"{synapse.test_dir}: validation cases not found: {shorten(missing)}")
    train_cases = sorted({n.split("_slice")[0] for n in synapse.train_slices})
    return TrainingCases("synapse", root, synapse.classes, train_cases, list(tests), synapse=synapse)


def open_training_data(source: str | Path | TrainingCases, *, img_size: int, preprocessing: Preprocessing,
                       augment: str | bool = "reference", seed: int = SEED, validation_fraction: float = 0.2,
                       validation_cases: Sequence[str] | None = None, lists: str | Path | None = None,
                       oversample_foreground: float = FOREGROUND_OVERSAMPLING, notes: Sequence[str] = (),
                       plan: Plan | None = None, progress: Progress | None = None,
                       mirror_axes: tuple[int, ...] = (0, 1), max_rotation: float = 180.0) -> TrainingData:
    """The training samples and validation volumes of a dataset, built with `preprocessing` as it is: its
    spacing, plane and intensities are decided already (swinseg.plan; a resumed run: its card's).

    `source`: cases read by `read_training_cases`, or a folder to read now (with `seed`, `validation_fraction`,
    `validation_cases`, `lists`). With a target spacing the training cases are resampled to it once, and
    samples are img_size crops (`oversample_foreground` of them centred on a foreground voxel); without one
    whole slices are resized (the published path; always so for the Synapse layout, whose files carry no
    spacing). `augment`: reference, strong or none (True/False: reference/none); `seed` also draws the crops
    and the augmentation. The preprocessing's `context_slices` decides the neighbours each sample carries.
    `notes` (how the preprocessing was decided) and `plan` are kept for the training summary.
    `mirror_axes` and `max_rotation` (degrees) bound the strong augmentation's mirroring and rotation.
    """
    if isinstance(augment, bool):
        augment = "reference" if augment else "none"
    cases = source if isinstance(source, TrainingCases) else read_training_cases(
        source, preprocessing, seed=seed, validation_fraction=validation_fraction,
        validation_cases=validation_cases, lists=lists, progress=progress)
    slices = SliceDataset(_slice_source(cases, preprocessing, oversample_foreground, seed), img_size,
                          augment=augment, seed=seed, mirror_axes=mirror_axes, max_rotation=max_rotation)
    volumes: Sequence[VolumeCase]
    if cases.synapse is not None:
        volumes = H5Volumes(cases.synapse.test_dir, cases.validation_cases)
    else:
        volumes = MemoryVolumes([cases.loaded[n] for n in cases.validation_cases])
    return TrainingData(cases.layout, cases.root, slices, volumes, cases.classes, cases.train_cases,
                        cases.validation_cases, preprocessing, list(notes), plan)


def _slice_source(cases: TrainingCases, prep: Preprocessing, oversample: float,
                  seed: int) -> NpzSlices | MemorySlices | GridSlices:
    """Where the training samples come from: npz slices (Synapse), whole slices in memory, or the cases
    resampled to the target spacing."""
    if cases.synapse is not None:
        if prep.spacing is not None:
            raise SwinsegError(f"{cases.root}: Synapse-layout slices carry no pixel spacing; they train with "
                               "whole slices (spacing none)")
        return NpzSlices(cases.synapse.train_dir, cases.synapse.train_slices, prep.context_slices)
    set_bounds(list(cases.loaded.values()), prep)
    training = cases.training
    if prep.spacing is None:
        return MemorySlices(training, prep.context_slices)
    check_grid_fits_in_memory(cases.root, training, prep.spacing)
    return GridSlices([to_grid_case(case, prep.spacing, seed) for case in training], oversample,
                      prep.context_slices)


def read_channel_name(path: Path) -> str | None:
    """Channel 0's name in an nnU-Net dataset.json (`channel_names`, or MSD's `modality`), None if absent."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = values.get("channel_names") or values.get("modality") if isinstance(values, dict) else None
    if not isinstance(names, dict):
        return None
    name = names.get("0", names.get(0))
    return str(name) if name is not None else None
