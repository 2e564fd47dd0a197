"""DICOM RT Structure Set (RTSTRUCT) output: a predicted label map as planar contours in patient coordinates on
the source DICOM series (study, frame of reference, each contour on its source slice), for radiotherapy planning
systems and viewers that read structure sets rather than SEG.

ROIs are the card's foreground classes (ROI number = label id), coloured as swinseg's overlays. Every foreground
class is an ROI, also when absent from the mask: its ROI Contour item then has no (type 3) Contour Sequence, so ROI
numbers always equal label ids. Contours are CLOSED_PLANAR polygons from marching squares at 0.5 on each slice:
straight runs lie on pixel edges, corners are cut diagonally (a lone pixel becomes a diamond of half its area,
so very thin structures lose a little volume in a planning system); a hole (and an island inside it) is a
contour of its own, so readers must combine the contours of a slice by even-odd (XOR) inclusion, the common
convention (the keyhole technique is not used). pydicom is imported only when a structure set is written."""
from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from swinseg import __version__
from swinseg.config import ModelCard
from swinseg.dicom_seg import ORGAN_CODES, check_source_series
from swinseg.errors import SwinsegError
from swinseg.io import Volume, atomic_output
from swinseg.overlay import label_color

SUFFIX = ".dcm"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, referenced by RT Referenced Study items
DECIMALS = 3  # contour coordinates in mm, rounded to a micrometre
# patient and study attributes copied from the source series, all type 2 (empty where the source lacks them)
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
          "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as error:
        raise SwinsegError("RTSTRUCT output needs pydicom: pip install 'swinseg[dicom]'") from error
    return pydicom


def write_rtstruct(path: str | Path, labels: np.ndarray, volume: Volume, card: ModelCard) -> None:
    """Write `labels` (the volume's array order) as an RT Structure Set on the series `volume` was read from."""
    check_source_series(labels, volume, card, "an RTSTRUCT")
    pydicom = _pydicom()
    sources = [pydicom.dcmread(file, stop_before_pixels=True) for file in volume.source_files]
    if "FrameOfReferenceUID" not in sources[0]:
        raise SwinsegError(f"{volume.source_files[0]}: no FrameOfReferenceUID; an RTSTRUCT needs the series' frame "
                           "of reference")
    planes = [_plane(source, file) for source, file in zip(sources, volume.source_files)]
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if labels.shape != expected:
        raise SwinsegError(f"{volume.path}: mask shape {labels.shape} does not match the series' {expected} "
                           "(slices, rows, columns)")
    labels = np.asarray(labels, dtype=np.uint8 if len(card.classes) <= 256 else np.uint16)
    dataset = _structure_set(sources, card)
    from scipy import ndimage  # here: only RTSTRUCT output needs it

    boxes = ndimage.find_objects(labels, max_label=len(card.classes) - 1)  # one pass; None: class absent
    dataset.ROIContourSequence = [
        _roi_contour(label, [] if box is None else [
            _contour_item(points, sources[z]) for z, points in _class_polygons(labels, label, box, planes)])
        for label, box in enumerate(boxes, start=1)
    ]
    with atomic_output(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)


def _plane(source: Any, file: str) -> tuple[np.ndarray, np.ndarray]:
    """(position of pixel (0, 0), 2x3 matrix taking (row, column) pixel offsets to mm) of a slice, LPS."""
    try:
        position = np.array(source.ImagePositionPatient, dtype=np.float64)
        orientation = np.array(source.ImageOrientationPatient, dtype=np.float64)
        row_spacing, column_spacing = (float(v) for v in source.PixelSpacing)
    except (AttributeError, TypeError, ValueError) as error:
        raise SwinsegError(f"{file}: no image position, orientation and pixel spacing; an RTSTRUCT needs the "
                           "slice's patient geometry") from error
    # DICOM: the first orientation vector runs along a row (column index), the second down a column (row index)
    return position, np.stack([orientation[3:] * row_spacing, orientation[:3] * column_spacing])


def _slice_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Closed (row, column) polygons around the pixels of a 2-D mask, without the repeated closing vertex and
    without vertices in the middle of a straight edge. Zero padding closes the contours at the mask's border."""
    from skimage.measure import find_contours

    polygons = []
    for contour in find_contours(np.pad(mask, 1), 0.5):
        vertices = contour[:-1] - 1.0
        before, after = vertices - np.roll(vertices, 1, axis=0), np.roll(vertices, -1, axis=0) - vertices
        turn = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
        polygons.append(vertices[np.abs(turn) > 1e-9])
    return polygons


def _class_polygons(labels: np.ndarray, label: int, box: tuple[slice, ...],
                    planes: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
    """(slice index, polygon in patient mm (n, 3)) of every contour of `label`, on the slices of its box."""
    rows, columns = box[1], box[2]
    offset = np.array([rows.start, columns.start], dtype=np.float64)
    for z in range(box[0].start, box[0].stop):
        mask = labels[z, rows, columns] == label
        if not mask.any():
            continue
        position, axes = planes[z]
        for vertices in _slice_contours(mask):
            yield z, position + (vertices + offset) @ axes


def _contour_item(points: np.ndarray, source: Any) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ContourImageSequence = [_image_reference(source)]
    item.ContourGeometricType = "CLOSED_PLANAR"
    item.NumberOfContourPoints = len(points)
    item.ContourData = np.round(points, DECIMALS).ravel().tolist()
    return item


def _image_reference(source: Any) -> Any:
    from pydicom.dataset import Dataset

    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return reference


def _roi_contour(label: int, contours: list[Any]) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.ROIDisplayColor = [int(round(float(v) * 255.0)) for v in label_color(label)]
    item.ReferencedROINumber = label
    if contours:
        item.ContourSequence = contours
    return item


def _structure_set(sources: list[Any], card: ModelCard) -> Any:
    """The RTSTRUCT dataset with its file meta and all modules but the ROI contours."""
    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset

    first, now = sources[0], datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID = RTSTRUCT_SOP_CLASS
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID = pydicom.uid.generate_uid()
    dataset.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: class names and copied patient names of any script
    dataset.InstanceCreationDate, dataset.InstanceCreationTime = date, time
    for keyword in COPIED:
        setattr(dataset, keyword, first.get(keyword, ""))
    dataset.Modality = "RTSTRUCT"
    dataset.SeriesInstanceUID = pydicom.uid.generate_uid()
    dataset.SeriesNumber, dataset.InstanceNumber = 9902, 1
    dataset.SeriesDescription = _fit(f"swinseg {card.name}", 64)
    dataset.OperatorsName = ""
    dataset.Manufacturer, dataset.ManufacturerModelName = "swinseg", _fit(card.name, 64)
    dataset.SoftwareVersions = __version__
    dataset.FrameOfReferenceUID = first.FrameOfReferenceUID
    dataset.PositionReferenceIndicator = ""
    dataset.StructureSetLabel = "swinseg"
    dataset.StructureSetName = _fit(card.name, 64)
    dataset.StructureSetDate, dataset.StructureSetTime = date, time
    dataset.ReferencedFrameOfReferenceSequence = [_frame_of_reference(sources)]
    dataset.StructureSetROISequence = [_roi(label, name, first.FrameOfReferenceUID)
                                       for label, name in enumerate(card.classes[1:], start=1)]
    dataset.RTROIObservationsSequence = [
        _observation(label, name, name.lower() in ORGAN_CODES or name in card.segment_codes)
        for label, name in enumerate(card.classes[1:], start=1)]
    return dataset


def _frame_of_reference(sources: list[Any]) -> Any:
    """The Referenced Frame of Reference item: study -> series -> every source image."""
    from pydicom.dataset import Dataset

    first = sources[0]
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = [_image_reference(source) for source in sources]
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_SOP_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = [series]
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = [study]
    return frame


def _roi(label: int, name: str, frame_of_reference: str) -> Any:
    from pydicom.dataset import Dataset

    roi = Dataset()
    roi.ROINumber = label
    roi.ReferencedFrameOfReferenceUID = frame_of_reference
    roi.ROIName = _fit(name, 64)
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    return roi


def _fit(text: str, length: int) -> str:
    """`text` cut to a value representation's maximum length (LO 64, SH 16), counted in UTF-8 bytes as pydicom
    checks it (never longer than the limit in characters either)."""
    while len(text.encode("utf-8")) > length:
        text = text[:-1]
    return text


def _observation(label: int, name: str, organ: bool) -> Any:
    from pydicom.dataset import Dataset

    observation = Dataset()
    observation.ObservationNumber = label
    observation.ReferencedROINumber = label
    observation.ROIObservationLabel = _fit(name, 16)  # SH
    observation.RTROIInterpretedType = "ORGAN" if organ else ""  # type 2: unknown for classes not in the table
    observation.ROIInterpreter = ""
    return observation
