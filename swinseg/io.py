"""Reading and writing volumes with their geometry; atomic file output; orientation helpers.

Arrays are in SimpleITK index order: (z, y, x) for 3-D, (y, x) for 2-D. `spacing` follows the array order;
`origin` and `direction` are in ITK (LPS, x-first) order. NIfTI files are read and written with nibabel using
the input's own header, so a mask written "like" a NIfTI scan has the same affine and qform/sform codes.

On-disk representations written by `write_volume`:
- labels: the dtype given (uint8, or uint16 beyond 256 classes), stored exactly (no intensity scaling);
- probabilities (a leading class axis, e.g. (C, z, y, x) float16): float32 on disk (NIfTI and ITK formats
  have no float16), NIfTI as a 4-D image (x, y, z, C) with the class axis last and the same spatial affine,
  ITK formats (NRRD/MHA) as a vector image with C components per voxel;
- 2-D images (PNG/TIFF): labels as 8/16-bit PNG; JPEG is refused (lossy).
"""
from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swinseg.errors import SwinsegError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
IMAGE_2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
H5_SUFFIXES = (".npy.h5", ".h5")  # Synapse test volumes (TransUNet layout): datasets "image" and "label"
SUPPORTED_SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES + IMAGE_2D_SUFFIXES
READABLE_SUFFIXES = SUPPORTED_SUFFIXES + H5_SUFFIXES
_DETACHED_HEADER_SUFFIXES = (".mhd", ".nhdr")  # header + separate data file
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])
_LUMINANCE = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" mode
_AXIS_LETTERS = ("LR", "PA", "SI")  # physical axis -> (letter for +, letter for -) in LPS
QFORM_SFORM_TOLERANCE = 0.25  # voxels the qform and sform may place a corner apart before a header is refused
MAX_SERIES_DEPTH = 4  # patient/study/series/... folders searched below a folder given to predict


@dataclass
class Volume:
    """An image array with its physical geometry.

    `array`: SimpleITK index order ((z, y, x) or (y, x)). `spacing`: mm, in array order. `origin`,
    `direction` (flattened row-major ndim x ndim matrix): ITK order (x, y, z), LPS. `path`: where it was read
    from. `normalized`: intensities are already scaled for the network (Synapse h5 images, in [0, 1]).
    `_nifti_header` keeps the source's NIfTI header, for `write_volume`.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    path: Path | None = None
    normalized: bool = False
    spacing_known: bool = True  # False: read as 1 mm for want of a spacing (2-D images, h5 without one)
    source_files: tuple[str, ...] = field(default=(), repr=False, compare=False)  # DICOM: file of each slice
    notes: tuple[str, ...] = ()  # what reading changed that the user should be told (e.g. slices interpolated)
    _nifti_header: Any = field(default=None, repr=False, compare=False)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.spacing)

    @property
    def name(self) -> str:
        """The source file name for messages ("<array>" when the volume was not read from a file)."""
        return self.path.name if self.path is not None else "<array>"

    def direction_matrix(self) -> np.ndarray:
        """The direction cosines as an (ndim, ndim) matrix; column k is index axis k (x, y, z)."""
        return np.asarray(self.direction, dtype=np.float64).reshape(self.ndim, self.ndim)

    def with_array(self, array: np.ndarray) -> Volume:
        """The same geometry and header with another array (same spatial shape)."""
        if array.shape[array.ndim - self.ndim :] != self.array.shape[self.array.ndim - self.ndim :]:
            raise ValueError(f"array shape {array.shape} does not match volume shape {self.array.shape}")
        return dataclasses.replace(self, array=array)


def itk() -> Any:
    """SimpleITK, with ITK's own warning printer switched off: swinseg checks what those warnings are about
    (slice gaps, unreadable files) itself and says it in one line."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


# ---------------------------------------------------------------------------------------------- atomic output


def _suffix(path: Path) -> str:
    """The file's format suffix, lower case, with .nii.gz kept whole."""
    name = path.name.lower()
    for double in (".nii.gz", ".npy.h5"):
        if name.endswith(double):
            return double
    return Path(name).suffix


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` (same suffixes); move it onto `path` on success, delete on failure.

    The temporary name is hidden (`.NAME.tmp-XXXXXXXX.nii.gz`) so folder scans skip it; the parent folder is
    created if needed. Readers of `path` never see a half-written file.
    """
    path = Path(path)
    suffix = _suffix(path)
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SwinsegError(f"{path}: cannot create its folder ({error.strerror or error})") from error
    tmp = path.parent / f".{base}.tmp-{secrets.token_hex(4)}{suffix}"
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        reason = _write_failure(error, tmp)
        if reason is not None:
            raise SwinsegError(f"{path}: cannot write ({reason})") from error
        raise


def _write_failure(error: BaseException, tmp: Path) -> str | None:
    """Why writing `tmp` failed, in words that do not name the hidden temporary file; None when `error` is
    not about writing it (it is then re-raised as it is)."""
    if isinstance(error, OSError) and error.filename in (None, str(tmp), tmp):
        return error.strerror or str(error) or type(error).__name__
    if isinstance(error, RuntimeError) and tmp.name in str(error):  # SimpleITK's writers
        return str(_itk_reason(error)).replace(str(tmp), "the file")
    return None


# -------------------------------------------------------------------------------------------------- reading


def read_volume(
    path: str | Path, *, series: str | None = None, channel: int | None = None, dataset: str = "image",
    allow_gaps: bool = False,
) -> Volume:
    """Read a NIfTI, NRRD, MHA/MHD file, a DICOM series folder, a 2-D PNG/JPEG/TIFF image or a Synapse
    `.npy.h5` volume.

    `series`: the SeriesInstanceUID to read from a folder holding several DICOM series. `channel`: the
    volume/component to take from a 4-D or vector image. `dataset`: which array of an HDF5 file ("image" or
    "label"; ignored for other formats). RGB(A) 2-D images are read as luminance. `allow_gaps`: a DICOM series
    with missing slices is interpolated onto a uniform grid (said in `Volume.notes`) instead of refused.
    Raises SwinsegError (one line naming the file) for missing, empty, unreadable or ambiguous input.
    """
    path = Path(path)
    if not path.exists():
        raise SwinsegError(f"{path}: file not found")
    if path.is_dir():
        return _read_dicom_series(path, series, channel, allow_gaps)
    if path.stat().st_size == 0:
        raise SwinsegError(f"{path}: empty file")
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return _read_nifti(path, channel)
    if suffix in H5_SUFFIXES:
        return _read_h5(path, dataset)
    return _read_itk(path, channel, kind="image2d" if suffix in IMAGE_2D_SUFFIXES else "itk")


def _unreadable(path: Path, error: BaseException) -> SwinsegError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
    reason = reason[:160]
    detail = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
    return SwinsegError(f"{path}: not a readable image (corrupt, truncated or not an image file; {detail})")


def _read_nifti(path: Path, channel: int | None) -> Volume:
    import nibabel as nib

    try:
        if _suffix(path) == ".nii.gz":  # decompress whole: gzip's CRC check catches corrupt streams
            raw = gzip.decompress(path.read_bytes())
            image_class = nib.Nifti2Image if _nifti_header_size(raw) == 540 else nib.Nifti1Image
            image = image_class.from_bytes(raw)
            del raw
        else:
            image = nib.load(path, mmap=False)
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise SwinsegError(f"{path}: not a NIfTI image ({type(image).__name__})")
        data = np.asanyarray(image.dataobj)
    except SwinsegError:
        raise
    except Exception as error:  # nibabel/gzip/zlib raise many types for bad files
        raise _unreadable(path, error) from error
    header = image.header
    _check_qform_sform(path, header)
    if np.iscomplexobj(data):
        raise SwinsegError(f"{path}: complex-valued image ({data.dtype}); save its magnitude as a real-valued image")
    data = _select_nifti_channel(path, data, channel)
    spacing_xyz, origin, direction = _itk_geometry_from_affine(path, image.affine)
    return Volume(
        array=data.T,  # nibabel (x, y, z) Fortran order -> (z, y, x) C order, no copy
        spacing=tuple(float(s) for s in spacing_xyz[::-1]),
        origin=tuple(float(o) for o in origin),
        direction=tuple(float(d) for d in direction.ravel()),
        path=path,
        _nifti_header=header,
    )


def _read_h5(path: Path, dataset: str) -> Volume:
    """A (D, H, W) Synapse volume: identity (LPS) direction, as the slices are stored; spacing from the
    file's `spacing` attribute (written by `swinseg preprocess`) or 1 mm."""
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            if dataset not in h5:
                raise SwinsegError(f"{path}: no dataset {dataset!r} (has {', '.join(sorted(h5.keys())) or 'none'})")
            array = np.asarray(h5[dataset])
            spacing_known = "spacing" in h5.attrs
            spacing = tuple(float(s) for s in h5.attrs.get("spacing", (1.0,) * array.ndim))
    except SwinsegError:
        raise
    except Exception as error:  # h5py raises OSError/KeyError/ValueError for bad files
        raise _unreadable(path, error) from error
    if array.ndim not in (2, 3) or len(spacing) != array.ndim:
        raise SwinsegError(f"{path}: dataset {dataset!r} has shape {array.shape}; expected a 2-D or 3-D array")
    ndim = array.ndim
    return Volume(
        array=array,
        spacing=spacing,
        origin=(0.0,) * ndim,
        direction=tuple(float(v) for v in np.eye(ndim).ravel()),
        path=path,
        normalized=dataset == "image" and array.dtype.kind == "f" and bool(array.min() >= 0 and array.max() <= 1),
        spacing_known=spacing_known,
    )


def _check_qform_sform(path: Path, header: Any) -> None:
    """Refuse a header whose qform and sform are both set but place the voxels differently: nibabel (and this
    reader) would take the sform, ITK, 3D Slicer and ITK-SNAP may take the qform, so masks written as NRRD/MHA
    or viewed there would sit elsewhere than on the scan."""
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if qform is None or sform is None or not qcode or not scode:
        return
    shape = (tuple(header.get_data_shape()) + (1, 1))[:3]
    corners = np.array([[i, j, k, 1.0] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * np.r_[
        np.maximum(np.asarray(shape, dtype=float) - 1, 1), 1.0]
    moved = float(np.abs(corners @ (qform - sform).T)[:, :3].max())
    voxel = float(np.min(np.linalg.norm(sform[:3, :3], axis=0)))
    if moved > QFORM_SFORM_TOLERANCE * voxel:  # below: the float32 quaternion's rounding, harmless
        raise SwinsegError(
            f"{path}: the NIfTI qform (code {int(qcode)}) and sform (code {int(scode)}) disagree by up to "
            f"{moved:.3g} mm at the volume's corners; viewers and ITK may use the qform, nibabel the sform. Make "
            "them agree (e.g. nibabel: img.set_qform(img.get_sform(), code=1)) with the one you trust")


def _nifti_header_size(raw: bytes) -> int:
    """sizeof_hdr of NIfTI bytes (348 for NIfTI-1, 540 for NIfTI-2), in either byte order."""
    little, big = int.from_bytes(raw[:4], "little"), int.from_bytes(raw[:4], "big")
    return little if little in (348, 540) else big


def _select_nifti_channel(path: Path, data: np.ndarray, channel: int | None) -> np.ndarray:
    """Reduce NIfTI data to 3-D (x, y, z): 2-D gets z=1, 4-D/5-D (vector) need `channel` unless singleton."""
    if data.ndim == 2:
        data = data[:, :, np.newaxis]
    if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector convention (x, y, z, 1, c)
        data = data[:, :, :, 0, :]
    if data.ndim > 4:
        raise SwinsegError(f"{path}: {data.ndim}-D image {data.shape} is not supported")
    if data.ndim == 4:
        if data.shape[3] == 1 and channel in (None, 0):
            return data[:, :, :, 0]
        return data[:, :, :, _check_channel(path, channel, data.shape[3])]
    if channel is not None:
        raise SwinsegError(f"{path}: --channel {channel} given but the image has a single channel")
    return data


def _check_channel(path: Path, channel: int | None, count: int) -> int:
    if channel is None:
        raise SwinsegError(f"{path}: image has {count} channels/volumes; select one with --channel K (0-{count - 1})")
    if not 0 <= channel < count:
        raise SwinsegError(f"{path}: --channel {channel} out of range, the image has channels 0-{count - 1}")
    return channel


def _itk_geometry_from_affine(path: Path, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spacing x, y, z; origin; direction 3x3) in ITK's LPS convention from a NIfTI (RAS) affine."""
    linear = _LPS_FROM_RAS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if not np.all(spacing > 0) or not np.all(np.isfinite(affine)):
        raise SwinsegError(f"{path}: degenerate affine in the NIfTI header (zero or non-finite voxel size)")
    direction = linear / spacing
    if abs(np.linalg.det(direction)) < 1e-3:
        raise SwinsegError(f"{path}: singular affine in the NIfTI header (two voxel axes point the same way)")
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):  # sheared: nearest rotation (as ITK)
        u, _, vt = np.linalg.svd(direction)
        direction = u @ vt
    return spacing, _LPS_FROM_RAS @ affine[:3, 3], direction


def _read_itk(path: Path, channel: int | None, kind: str) -> Volume:
    sitk = itk()

    try:
        image = sitk.ReadImage(str(path))
    except Exception as error:  # SimpleITK raises RuntimeError with a multi-line ITK message
        raise _unreadable(path, _itk_reason(error)) from error
    return _volume_from_sitk(image, path, channel, kind)


def _itk_reason(error: Exception) -> Exception:
    """A short RuntimeError from SimpleITK's multi-line message (the line after 'Description:' if any)."""
    text = str(error).strip()
    match = re.search(r"(?:Description|ERROR):\s*(.+)", text)
    line = match.group(1) if match else (text.splitlines()[-1] if text else "")
    return RuntimeError(re.sub(r"\w+ ?\(0x[0-9a-fA-F]+\):\s*", "", line).strip().rstrip(":"))


def _volume_from_sitk(image: Any, path: Path, channel: int | None, kind: str) -> Volume:
    sitk = itk()

    if "complex" in image.GetPixelIDTypeAsString():
        raise SwinsegError(f"{path}: complex-valued image; save its magnitude as a real-valued image")
    components = image.GetNumberOfComponentsPerPixel()
    if image.GetDimension() == 4:
        count = image.GetSize()[3]
        image = image[:, :, :, _check_channel(path, channel, count)]
        channel = None
    if components > 1:
        if kind == "image2d" and channel is None and components in (3, 4):
            return _luminance_volume(image, path)
        if kind == "image2d" and channel is None and components == 2:  # gray + alpha
            channel = 0
        image = sitk.VectorIndexSelectionCast(image, _check_channel(path, channel, components))
    elif channel is not None:
        raise SwinsegError(f"{path}: --channel {channel} given but the image has a single channel")
    if image.GetDimension() not in (2, 3):
        raise SwinsegError(f"{path}: {image.GetDimension()}-D image is not supported")
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing=tuple(float(s) for s in image.GetSpacing()[::-1]),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
        path=path,
        spacing_known=kind != "image2d",  # PNG/JPEG/TIFF hold no physical pixel size (DPI at most)
    )


def _luminance_volume(image: Any, path: Path) -> Volume:
    sitk = itk()

    rgb = sitk.GetArrayFromImage(image)  # (..., components)
    luminance = rgb[..., :3].astype(np.float64) @ np.asarray(_LUMINANCE)
    if np.issubdtype(rgb.dtype, np.integer):
        info = np.iinfo(rgb.dtype)
        luminance = np.clip(np.rint(luminance), info.min, info.max)
    return Volume(
        array=luminance.astype(rgb.dtype if np.issubdtype(rgb.dtype, np.integer) else np.float32),
        spacing=tuple(float(s) for s in image.GetSpacing()[::-1]),
        origin=tuple(float(o) for o in image.GetOrigin()),
        direction=tuple(float(d) for d in image.GetDirection()),
        path=path,
        spacing_known=False,
    )


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


# -------------------------------------------------------------------------------------------------- writing


def write_volume(path: str | Path, array: np.ndarray, like: Volume) -> None:
    """Write `array` atomically to `path` with the geometry of `like`; the format follows `path`'s suffix.

    `array` has `like`'s spatial shape, optionally with one leading channel axis (probabilities). The dtype is
    kept (labels uint8/uint16 stored exactly; bool -> uint8; float16 -> float32 on disk). A NIfTI output of a
    NIfTI `like` reuses its header: same affine, qform/sform and their codes. Refuses to overwrite `like.path`.
    """
    path = Path(path)
    if like.path is not None and (
        path.resolve() == like.path.resolve() or (path.exists() and path.samefile(like.path))
    ):
        raise SwinsegError(f"{path}: refusing to overwrite the input file; choose another output path")
    array = _disk_array(np.asarray(array), like)
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        with atomic_output(path) as tmp:
            _write_nifti(tmp, array, like)
        return
    if suffix in (".jpg", ".jpeg"):
        raise SwinsegError(f"{path}: JPEG is lossy and cannot hold labels; write .png instead")
    if suffix not in SUPPORTED_SUFFIXES:
        raise SwinsegError(f"{path}: unsupported output type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    if suffix == ".png" and (array.dtype not in (np.uint8, np.uint16) or array.ndim != 2):
        raise SwinsegError(f"{path}: PNG holds 2-D 8/16-bit labels only; write probabilities as .tif or .nii.gz")
    image = _to_sitk(array, like)
    if suffix in _DETACHED_HEADER_SUFFIXES:
        _write_detached(path, image)
        return
    sitk = itk()

    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=suffix not in (".tif", ".tiff"))


def _disk_array(array: np.ndarray, like: Volume) -> np.ndarray:
    """Check the shape against `like` and map dtypes that the formats lack (bool, float16)."""
    spatial = like.array.shape[like.array.ndim - like.ndim :]
    if array.shape[array.ndim - like.ndim :] != spatial or array.ndim - like.ndim not in (0, 1):
        raise ValueError(f"array shape {array.shape} does not fit volume {spatial} (+ one channel axis)")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def _write_nifti(tmp: Path, array: np.ndarray, like: Volume) -> None:
    import nibabel as nib

    data = array.T  # (z, y, x) -> (x, y, z); (C, z, y, x) -> (x, y, z, C)
    if like.ndim == 2:  # a 2-D source written as NIfTI: one slice
        data = data[:, :, np.newaxis, ...]
    if like._nifti_header is not None:
        header = like._nifti_header.copy()
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    else:
        header, image_class = _nifti_header_from_geometry(like), nib.Nifti1Image
    zooms = tuple(header.get_zooms()[:3])
    zooms += (1.0,) * (3 - len(zooms))  # a 2-D NIfTI source has two zooms
    header.set_data_dtype(data.dtype)
    header.set_data_shape(data.shape)
    header.set_zooms(zooms + (1.0,) * (data.ndim - 3))
    header.set_slope_inter(1.0, 0.0)
    header["cal_min"], header["cal_max"] = 0.0, 0.0  # the source's display window would hide labels
    header["intent_code"] = 0
    header["descrip"] = b"swinseg"
    image = image_class(data, None, header=header)
    image.to_filename(tmp)


def _nifti_header_from_geometry(like: Volume) -> Any:
    """A NIfTI header (qform = sform, code scanner) for a volume read from a non-NIfTI source."""
    import nibabel as nib

    spacing = np.ones(3)
    direction = np.eye(3)
    origin = np.zeros(3)
    n = like.ndim
    spacing[:n] = like.spacing[::-1]
    direction[:n, :n] = like.direction_matrix()
    origin[:n] = like.origin
    affine = np.eye(4)
    affine[:3, :3] = _LPS_FROM_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_FROM_RAS @ origin
    header = nib.Nifti1Header()
    header.set_data_shape((1, 1, 1))
    header.set_qform(affine, code=1)
    header.set_sform(affine, code=1)
    header.set_xyzt_units("mm", "sec")
    return header


def _to_sitk(array: np.ndarray, like: Volume) -> Any:
    sitk = itk()

    if array.ndim > like.ndim:  # leading channel axis -> vector pixels
        image = sitk.GetImageFromArray(np.ascontiguousarray(np.moveaxis(array, 0, -1)), isVector=True)
    else:
        image = sitk.GetImageFromArray(array)
    image.SetSpacing(like.spacing[::-1])
    image.SetOrigin(like.origin)
    image.SetDirection(like.direction)
    return image


def _write_detached(path: Path, image: Any) -> None:
    """Write a header + data file pair (.mhd/.nhdr) in a hidden temp folder; move the data, then the header."""
    sitk = itk()

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        sitk.WriteImage(image, str(staging / path.name), useCompression=True)
        for produced in sorted(staging.iterdir(), key=lambda p: p.name == path.name):  # header last
            os.replace(produced, path.parent / produced.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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


def _orientation_plan(volume: Volume, code: str) -> tuple[list[int], tuple[int, ...]]:
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
    perm, _ = _orientation_plan(volume, code)
    return tuple(float(volume.spacing[p]) for p in perm)


def to_orientation(volume: Volume, code: str) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """The volume's array permuted and flipped into orientation `code` (as SimpleITK's DICOMOrient(code)
    would give it), without resampling, and a function mapping an array in that orientation (with any
    number of extra leading axes, e.g. classes) back to the volume's own array order.

    The returned array is a view of `volume.array`. Codes name the direction each index axis (x, y, z)
    points to, in SimpleITK's convention: "LPS" is the identity direction.
    """
    n = volume.ndim
    perm, flips = _orientation_plan(volume, code)
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


# ---------------------------------------------------------------------------------------- names and folders


def case_name(path: str | Path, *, strip_channel: bool = False) -> str:
    """The file (or DICOM folder) name without its image suffix; `strip_channel` drops nnU-Net's channel-0
    suffix `_0000` (only that one: `case_0001` is a case name, not a channel)."""
    path = Path(path)
    name = path.name
    suffix = _suffix(path)
    if suffix in READABLE_SUFFIXES or suffix == ".dcm":
        name = name[: len(name) - len(suffix)]
    if strip_channel:
        name = re.sub(r"_0000$", "", name)
    return name


def find_images(folder: str | Path) -> list[Path]:
    """Supported image files directly in `folder`, plus the folders below it that hold a DICOM series (one entry
    each, found up to MAX_SERIES_DEPTH levels down, as in patient/study/series trees; `folder` itself if it holds
    one), sorted by name. Hidden files and folders (e.g. temp outputs) are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SwinsegError(f"{folder}: not a folder")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and _suffix(entry) in READABLE_SUFFIXES:
            found.append(entry)
        elif entry.is_dir():
            found.extend(_series_folders(entry, MAX_SERIES_DEPTH))
    if not found and _has_dicom_series(folder):
        found.append(folder)
    return found


def _series_folders(folder: Path, depth: int) -> list[Path]:
    """`folder` if it holds a DICOM series, else the series folders nested in it (up to `depth` levels)."""
    if _has_dicom_series(folder):
        return [folder]
    if depth <= 1:
        return []
    nested = [entry for entry in sorted(folder.iterdir()) if entry.is_dir() and not entry.name.startswith(".")]
    return [found for entry in nested for found in _series_folders(entry, depth - 1)]


def _has_dicom_series(folder: Path) -> bool:
    return bool(itk().ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
