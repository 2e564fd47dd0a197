"""Reading a volume of any supported kind (NIfTI, NRRD/MHA, 2-D images, Synapse h5, DICOM series folders)."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from swinseg.errors import SwinsegError
from swinseg.io.dicom_series import _read_dicom_series
from swinseg.io.volume import (
    _LPS_FROM_RAS,
    H5_SUFFIXES,
    IMAGE_2D_SUFFIXES,
    NIFTI_SUFFIXES,
    QFORM_SFORM_TOLERANCE,
    Volume,
    _check_channel,
    _itk_reason,
    _suffix,
    _unreadable,
    _volume_from_sitk,
    itk,
)

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


