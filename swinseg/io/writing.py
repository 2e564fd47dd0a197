"""Writing a label map or probabilities with the geometry of the volume they belong to.

On-disk representations written by `write_volume`:
- labels: the dtype given (uint8, or uint16 beyond 256 classes), stored exactly (no intensity scaling);
- probabilities (a leading class axis, e.g. (C, z, y, x) float16): float32 on disk (NIfTI and ITK formats
  have no float16), NIfTI as a 4-D image (x, y, z, C) with the class axis last and the same spatial affine,
  ITK formats (NRRD/MHA) as a vector image with C components per voxel;
- 2-D images (PNG/TIFF): labels as 8/16-bit PNG; JPEG is refused (lossy).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from swinseg.errors import SwinsegError
from swinseg.io.files import atomic_output
from swinseg.io.volume import (
    _DETACHED_HEADER_SUFFIXES,
    _LPS_FROM_RAS,
    NIFTI_SUFFIXES,
    SUPPORTED_SUFFIXES,
    Volume,
    _disk_array,
    _suffix,
    _to_sitk,
    itk,
)

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
