"""Training cases read once: each case through swinseg.preprocess as predict reads scans, its labels checked,
kept compactly in memory (after a check that they fit); the held-out volumes that validation predicts."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from swinseg.config import Preprocessing
from swinseg.errors import SwinsegError
from swinseg.io import check_same_geometry, itk, read_volume
from swinseg.labels import label_map
from swinseg.orientation import Layout
from swinseg.preprocess import (
    PreparedVolume,
    grid_size,
    intensity_bounds,
    prepare_volume,
)
from swinseg.training.datasets import (
    TEST_SUFFIX,
    CaseFiles,
    NnunetDataset,
    shorten,
)
from swinseg.training.samples import LoadedCase

if TYPE_CHECKING:
    pass


Progress = Callable[[int, int, str], None]  # (done, total, current item name)



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
        known = spacing if spacing is not None and len(spacing) == 3 else None
        layout = Layout.identity(known or (1.0, 1.0, 1.0))  # stored as axial slices already
        prepared = PreparedVolume(image, (0.0, 1.0), layout.in_plane_spacing if known else None, layout)
        return VolumeCase(name, prepared, _label_array(label, path))


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
    prepared = prepare_volume(image, prep, intensities=False)
    label_slices = prepare_volume(label.with_array(label_array), prep, intensities=False).slices
    scan = prepared.layout
    ordered = (scan.spacing[scan.slice_axis], *scan.in_plane_spacing)
    return LoadedCase(case.name, np.ascontiguousarray(_compact(prepared.slices)), np.ascontiguousarray(label_slices),
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
