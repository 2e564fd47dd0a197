"""DICOM series folders: the series they hold, and one read as a volume after its slices are checked."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swinseg.errors import SwinsegError
from swinseg.io.volume import Volume, _itk_reason, _unreadable, _volume_from_sitk, itk


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series of a folder: its files in GDCM's slice order and what identifies it to a user."""

    uid: str
    description: str
    modality: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        modality = f" {self.modality}" if self.modality else ""
        return f"{self.uid} '{self.description}'{modality} ({len(self.files)} slices)"


def dicom_series(folder: str | Path) -> list[DicomSeries]:
    """The DICOM series directly in a folder, in GDCM's order."""
    sitk = itk()
    folder = Path(folder)
    found = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        tags = _dicom_tags(files[0], ("0008|103e", "0008|0060")) or {}
        found.append(DicomSeries(uid, tags.get("0008|103e", ""), tags.get("0008|0060", ""), files))
    return found


def _dicom_tags(file: str, keys: tuple[str, ...]) -> dict[str, str] | None:
    """The header values of `keys` that `file` holds (pixel data not read); None when it is not readable."""
    sitk = itk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    reader.LoadPrivateTagsOff()
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return None
    values = {key: reader.GetMetaData(key).strip() for key in keys if reader.HasMetaDataKey(key)}
    values["size"] = "x".join(str(n) for n in reader.GetSize()[:2])
    return values


def _read_dicom_series(folder: Path, series: str | None, channel: int | None, allow_gaps: bool = False) -> Volume:
    available = dicom_series(folder)
    if not available:
        raise SwinsegError(f"{folder}: folder holds no DICOM series (and is not an image file)")
    uids = [found.uid for found in available]
    if series is None and len(available) > 1:
        listing = "; ".join(str(found) for found in available)
        raise SwinsegError(f"{folder}: {len(available)} DICOM series, pick one with --series UID: {listing}")
    if series is not None and series not in uids:
        raise SwinsegError(f"{folder}: no DICOM series {series}; available: {', '.join(uids)}")
    chosen = available[uids.index(series)] if series is not None else available[0]
    _check_unlisted_dicom_files(folder, available, chosen.uid)
    gaps = _check_slice_geometry(folder, chosen, allow_gaps)
    sitk = itk()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        image = reader.Execute()
    except Exception as error:
        raise _unreadable(folder, _itk_reason(error)) from error
    volume = _volume_from_sitk(image, folder, channel, kind="dicom")
    if gaps is not None:
        return _uniform_stack(volume, chosen, *gaps)
    return dataclasses.replace(volume, source_files=chosen.files)


def _uniform_stack(volume: Volume, series: DicomSeries, along: np.ndarray, positions: np.ndarray,
                   orientation: np.ndarray, spacing: float) -> Volume:
    """The slices of a series with gaps (array slice k = series.files[k], at `along[k]` mm on the normal)
    linearly interpolated onto a uniform grid of `spacing` mm from the lowest to the highest slice."""
    order = np.argsort(along)
    stack, sorted_along = volume.array[order].astype(np.float32), along[order]
    count = int(round((sorted_along[-1] - sorted_along[0]) / spacing)) + 1
    targets = sorted_along[0] + spacing * np.arange(count)
    upper = np.clip(np.searchsorted(sorted_along, targets), 1, len(sorted_along) - 1)
    weight = ((targets - sorted_along[upper - 1]) / (sorted_along[upper] - sorted_along[upper - 1]))[:, None, None]
    array = (1 - weight) * stack[upper - 1] + weight * stack[upper]
    if np.issubdtype(volume.array.dtype, np.integer):
        array = np.rint(array).astype(volume.array.dtype)
    row, col = orientation[:3], orientation[3:]
    direction = np.column_stack([row, col, np.cross(row, col)])
    missing = count - len(along)
    note = (f"{volume.path}: {missing} missing slice(s) of DICOM series {series.uid} interpolated (--allow-gaps); "
            f"the mask is on a uniform {spacing:.2f} mm grid, not on the series' own slices")
    return dataclasses.replace(volume, array=array, spacing=(spacing, *volume.spacing[1:]),
                               origin=tuple(float(v) for v in positions[order[0]]),
                               direction=tuple(float(v) for v in direction.ravel()), notes=(note,))


def _check_unlisted_dicom_files(folder: Path, available: list[DicomSeries], uid: str) -> None:
    """Refuse a folder with an image file of series `uid` that no series lists because it cannot be parsed
    (truncated or corrupt): the series would be stacked without that slice. Other DICOM files that are no
    images (reports, presentation states, RTSTRUCT, DICOMDIR) are left alone."""
    listed = {Path(file).name for found in available for file in found.files}
    for entry in sorted(folder.iterdir()):
        if entry.name in listed or entry.name.startswith(".") or not entry.is_file():
            continue
        with open(entry, "rb") as handle:
            data = handle.read()
        is_slice = data[128:132] == b"DICM" and uid.encode() in data and _PIXEL_DATA_TAG in data
        if is_slice and _dicom_tags(str(entry), ()) is None:
            raise SwinsegError(f"{entry}: unreadable DICOM file (truncated or corrupt) in the series folder; "
                               "the series would be read without this slice")


_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"  # (7FE0,0010) in little endian: the file carries an image
SLICE_GAP_TOLERANCE = 0.05  # relative deviation from the median slice distance accepted as rounding
TILT_TOLERANCE_DEG = 0.5


def _check_slice_geometry(
    folder: Path, series: DicomSeries, allow_gaps: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
    """Refuse a series that ITK would stack onto a wrong grid: slices of different sizes or orientations,
    two slices at one position, gantry tilt (slices shifted in-plane along the stack) and missing slices
    (non-uniform slice positions, which ITK reads with one averaged spacing). With `allow_gaps`, missing slices
    return (position along the normal and patient position of each file, orientation, slice spacing) instead."""
    if len(series.files) < 2:
        return None
    headers = [_dicom_tags(file, ("0020|0032", "0020|0037")) for file in series.files]
    bad = next((file for file, header in zip(series.files, headers) if header is None), None)
    if bad is not None:
        raise SwinsegError(f"{bad}: unreadable DICOM header in series {series.uid}")
    sizes = sorted({header["size"] for header in headers})
    if len(sizes) > 1:
        raise SwinsegError(f"{folder}: DICOM series {series.uid} mixes slice sizes ({', '.join(sizes)})")
    try:
        positions = np.array([[float(v) for v in h["0020|0032"].split("\\")] for h in headers])
        orientations = np.array([[float(v) for v in h["0020|0037"].split("\\")] for h in headers])
    except (KeyError, ValueError):
        return None  # no patient geometry (e.g. secondary capture): nothing to check against
    if positions.shape[1] != 3 or orientations.shape[1] != 6:
        return None
    if not np.allclose(orientations, orientations[0], atol=1e-4):
        raise SwinsegError(f"{folder}: the slices of DICOM series {series.uid} are not parallel "
                           "(their image orientations differ)")
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    along = positions @ normal
    order = np.argsort(along)
    steps = np.diff(along[order])
    spacing = float(np.median(steps))
    if spacing <= 1e-6 or np.any(steps <= 1e-3 * spacing):
        raise SwinsegError(f"{folder}: DICOM series {series.uid} has several slices at one position "
                           "(duplicates, or several phases in one series)")
    drift = positions[order] - np.outer(along[order], normal)  # in-plane offset of each slice
    centred = along[order] - along[order].mean()
    slope = centred @ (drift - drift.mean(axis=0)) / float(centred @ centred)  # mm in-plane per mm along
    tilt = float(np.degrees(np.arctan(np.linalg.norm(slope))))  # one fit: robust to rounded positions
    if tilt > TILT_TOLERANCE_DEG:
        raise SwinsegError(f"{folder}: DICOM series {series.uid} has a gantry tilt of {tilt:.1f} degrees "
                           "(slices shifted in-plane along the stack); resample it to an untilted grid first")
    deviation = np.abs(steps - spacing) / spacing
    if not np.any(deviation > SLICE_GAP_TOLERANCE):
        return None
    multiples = steps / spacing
    if allow_gaps and np.all(np.abs(multiples - np.rint(multiples)) <= SLICE_GAP_TOLERANCE):
        return along, positions, orientations[0], spacing
    worst = int(np.argmax(deviation))
    start, stop = along[order][worst], along[order][worst + 1]
    missing = max(int(round(steps[worst] / spacing)) - 1, 0)
    hint = f", {missing} slice(s) missing" if missing else ""
    fix = "; --allow-gaps interpolates them" if missing and not allow_gaps else ""
    raise SwinsegError(
        f"{folder}: gap in DICOM series {series.uid}: slices {start:.2f} and {stop:.2f} mm along the normal are "
        f"{steps[worst]:.2f} mm apart, {spacing:.2f} mm elsewhere{hint}; the volume would be stacked wrongly{fix}")
