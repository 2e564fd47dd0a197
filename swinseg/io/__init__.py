"""Reading and writing volumes with their geometry; atomic file output; geometry checks and orientation.

Arrays are in SimpleITK index order: (z, y, x) for 3-D, (y, x) for 2-D. `spacing` follows the array order;
`origin` and `direction` are in ITK (LPS, x-first) order. NIfTI files are read and written with nibabel using
the input's own header, so a mask written "like" a NIfTI scan has the same affine and qform/sform codes.

One module per job: `volume` (Volume, the file kinds), `reading`, `dicom_series` (series folders and their
checks), `writing`, `geometry` (checks, resampling), `files` (atomic output, case names, folders);
`to_orientation` and `oriented_spacing` come from swinseg.orientation (codes and layouts). The names below
are the package's interface; `from swinseg.io import read_volume` and `io.read_volume` work.
"""
from __future__ import annotations

from swinseg.io.dicom_series import DicomSeries, dicom_series
from swinseg.io.files import atomic_output, case_name, file_sha256, find_images
from swinseg.io.geometry import check_finite, check_same_geometry, resample_like
from swinseg.io.reading import read_volume
from swinseg.io.volume import (
    H5_SUFFIXES,
    IMAGE_2D_SUFFIXES,
    ITK_SUFFIXES,
    MAX_SERIES_DEPTH,
    NIFTI_SUFFIXES,
    READABLE_SUFFIXES,
    SUPPORTED_SUFFIXES,
    Volume,
    itk,
)
from swinseg.io.writing import write_volume
from swinseg.orientation import oriented_spacing, to_orientation

__all__ = [
    "H5_SUFFIXES", "IMAGE_2D_SUFFIXES", "ITK_SUFFIXES", "MAX_SERIES_DEPTH", "NIFTI_SUFFIXES", "READABLE_SUFFIXES",
    "SUPPORTED_SUFFIXES", "DicomSeries", "Volume", "atomic_output", "case_name", "check_finite",
    "check_same_geometry", "dicom_series", "file_sha256", "find_images", "itk", "oriented_spacing",
    "read_volume", "resample_like", "to_orientation", "write_volume",
]
