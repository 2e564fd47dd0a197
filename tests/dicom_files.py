"""DICOM series written for tests (SimpleITK/GDCM), with the tags a scanner writes and highdicom needs, and the
same series as de-identification leaves it."""
from __future__ import annotations

import locale
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk


def dicom_series(folder: Path, array: np.ndarray, spacing: float = 2.0, tilt_mm: float = 0.0,
                 uid: str = "1.2.826.0.1.3680043.2.1125.7", pixel_mm: float = 0.8, description: str = "abdomen",
                 prefix: str = "slice") -> list[Path]:
    """Write (z, y, x) int16 `array` as a CT series, one file per slice; slice k sits k*spacing along z and,
    with `tilt_mm`, k*tilt_mm along y (a gantry tilt). Files are named PREFIX_KKK.dcm (several series can share
    a folder with distinct prefixes). Returns the files in slice order. GDCM's writer sets the
    process's LC_CTYPE to "C" (ASCII text by default afterwards); it is restored."""
    saved_locale = locale.setlocale(locale.LC_CTYPE)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for k, plane in enumerate(array):
        image = sitk.GetImageFromArray(plane[np.newaxis])
        image.SetSpacing((pixel_mm, pixel_mm, spacing))
        position = (-10.0, 20.0 + k * tilt_mm, k * spacing)
        tags = {"0008|0060": "CT", "0020|000d": "1.2.826.0.1.3680043.2.1125.1", "0020|000e": uid,
                "0008|103e": description, "0020|0013": str(k + 1), "0020|0032": "\\".join(map(str, position)),
                "0020|0037": "1\\0\\0\\0\\1\\0", "0008|0018": f"{uid}.{k + 1}", "0028|0030": f"{pixel_mm}\\{pixel_mm}",
                "0008|0016": "1.2.840.10008.5.1.4.1.1.2", "0020|0052": f"{uid}.0", "0010|0020": "SWINSEG-TEST",
                "0010|0010": "Test^Patient", "0018|0050": str(spacing), "0008|0020": "20261202",
                "0020|0010": "1", "0008|0050": "A1"}
        for key, value in tags.items():
            image.SetMetaData(key, value)
        files.append(folder / f"{prefix}_{k:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(image)
    locale.setlocale(locale.LC_CTYPE, saved_locale)
    return files


def _blank(*keywords: str) -> Callable[[Any], None]:
    def change(header: Any) -> None:
        for keyword in keywords:
            setattr(header, keyword, "")
    return change


def _remove(*keywords: str) -> Callable[[Any], None]:
    def change(header: Any) -> None:
        for keyword in keywords:
            if keyword in header:
                delattr(header, keyword)
    return change


def _replace_uids(header: Any) -> None:
    """New UIDs for the study, series, instance and frame of reference, the same for every slice (as the
    profile's U action keeps references consistent), the file meta's instance UID with them."""
    import pydicom

    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        setattr(header, keyword, pydicom.uid.generate_uid(entropy_srcs=[header.get(keyword)]))
    instance = header.get("SOPInstanceUID") or header.file_meta.MediaStorageSOPInstanceUID  # emptied: the meta's
    header.SOPInstanceUID = header.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid(
        entropy_srcs=[instance])


DATES_AND_TIMES = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "StudyTime", "SeriesTime",
                   "AcquisitionTime", "ContentTime", "InstanceCreationDate", "InstanceCreationTime")
# one de-identification option at a time, as DICOM PS3.15's basic profile (Z: emptied, X: removed, U: new UIDs)
# and anonymisers beyond it leave a series; each still makes valid SEG and RTSTRUCT output
DEIDENTIFICATIONS: dict[str, Callable[[Any], None]] = {
    "sop-class-empty": _blank("SOPClassUID"),  # the file meta's MediaStorageSOPClassUID stays
    "sop-class-removed": _remove("SOPClassUID"),
    "sop-instance-empty": _blank("SOPInstanceUID"),
    **{f"{keyword}-empty": _blank(keyword) for keyword in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
        "ReferringPhysicianName", "StudyDate", "StudyTime")},
    **{f"{keyword}-removed": _remove(keyword) for keyword in (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
        "ReferringPhysicianName", "SeriesNumber", "InstanceNumber", "Manufacturer", "InstitutionName",
        "StationName", "SeriesDescription")},
    "dates-and-times-removed": _remove(*DATES_AND_TIMES),
    "dates-and-times-empty": _blank(*DATES_AND_TIMES),
    "uids-replaced": _replace_uids,
    "private-removed": lambda header: header.remove_private_tags(),
}
# what nothing recovers: a SEG or RTSTRUCT must reference it
UNRECOVERABLE = {"FrameOfReferenceUID-removed": _remove("FrameOfReferenceUID"),
                 "StudyInstanceUID-removed": _remove("StudyInstanceUID")}


def deidentify(files: list[Path], *changes: Callable[[Any], None]) -> None:
    """Apply de-identification `changes` (DEIDENTIFICATIONS values) to each slice file in place."""
    import pydicom

    for file in files:
        header = pydicom.dcmread(file)
        for change in changes:
            change(header)
        header.save_as(file)
