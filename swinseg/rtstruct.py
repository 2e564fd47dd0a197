"""DICOM RT Structure Set (RTSTRUCT) output: a predicted label map as planar contours in patient coordinates on
the source DICOM series (study, frame of reference, each contour on its source slice), for radiotherapy planning
systems and viewers that read structure sets rather than SEG.

ROIs are the card's foreground classes (ROI number = label id), coloured as swinseg's overlays. Every foreground
class is an ROI, also when absent from the mask: its ROI Contour item then has no (type 3) Contour Sequence, so ROI
numbers always equal label ids. Contours are CLOSED_PLANAR polygons from marching squares at 0.5 on each slice:
straight runs lie on pixel edges (one vertex per corner), corners are cut diagonally (a lone pixel becomes a
diamond of half its area, so very thin structures lose a little volume in a planning system); a hole (and an
island inside it) is a contour of its own, so readers must combine the contours of a slice by even-odd (XOR)
inclusion, the common convention (the keyhole technique is not used). Regions (4-connected, as the contours
separate them) and holes of a slice smaller than a minimum area are left out. The file is Implicit VR Little
Endian (32-bit value lengths: a DS value of 64 KiB holds only ~2,000 points in Explicit VR), and the Contour
Sequences are encoded here directly, in time linear in the points. pydicom is imported only when a structure set
is written."""
from __future__ import annotations

import struct
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from swinseg import __version__
from swinseg.choices import MIN_CONTOUR_AREA
from swinseg.config import ModelCard
from swinseg.dicom_seg import ORGAN_CODES, check_source_series, read_sources
from swinseg.errors import SwinsegError
from swinseg.io import Volume, atomic_output
from swinseg.overlay import label_color

SUFFIX = ".dcm"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
STUDY_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management, referenced by RT Referenced Study items
DECIMALS = 3  # contour coordinates in mm, rounded to a micrometre
_DS_FORMAT = "{:.10g}".format  # a rounded coordinate in at most 16 characters (DS), without trailing zeros
# tags of the elements encoded directly (the Contour Sequence items)
CONTOUR_SEQUENCE, CONTOUR_IMAGE_SEQUENCE = 0x30060040, 0x30060016
CONTOUR_GEOMETRIC_TYPE, NUMBER_OF_CONTOUR_POINTS, CONTOUR_DATA = 0x30060042, 0x30060046, 0x30060050
REFERENCED_SOP_CLASS, REFERENCED_SOP_INSTANCE = 0x00081150, 0x00081155
# patient and study attributes copied from the source series, all type 2 (empty where the source lacks them)
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
          "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName")


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError as error:
        raise SwinsegError("RTSTRUCT output needs pydicom: pip install 'swinseg[dicom]'") from error
    return pydicom


def write_rtstruct(path: str | Path, labels: np.ndarray, volume: Volume, card: ModelCard,
                   min_contour_area: float = MIN_CONTOUR_AREA) -> str | None:
    """Write `labels` (the volume's array order) as an RT Structure Set on the series `volume` was read from.
    Regions and holes of a slice smaller than `min_contour_area` mm² are left out; returns a note counting
    them (None when there were none)."""
    check_source_series(labels, volume, card, "an RTSTRUCT")
    _pydicom()
    from pydicom.charset import convert_encodings, default_encoding

    sources = read_sources(volume)
    planes = [_plane(source, file) for source, file in zip(sources, volume.source_files)]
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    if labels.shape != expected:
        raise SwinsegError(f"{volume.path}: mask shape {labels.shape} does not match the series' {expected} "
                           "(slices, rows, columns)")
    labels = np.asarray(labels, dtype=np.uint8 if len(card.classes) <= 256 else np.uint16)
    dataset = _structure_set(sources, card)
    from scipy import ndimage  # here: only RTSTRUCT output needs it

    references = [_element(CONTOUR_IMAGE_SEQUENCE, _image_reference_item(source)) for source in sources]
    boxes = ndimage.find_objects(labels, max_label=len(card.classes) - 1)  # one pass; None: class absent
    contours, left_out = [], 0
    for label, box in enumerate(boxes, start=1):
        items, dropped = ([], 0) if box is None else _class_contours(labels, label, box, planes, references,
                                                                     min_contour_area)
        contours.append(_roi_contour(label, items))
        left_out += dropped
    dataset.ROIContourSequence = contours
    # encoded as written: pydicom then writes the raw Contour Sequences as they are, without decoding them first
    dataset.set_original_encoding(True, True, convert_encodings(dataset.SpecificCharacterSet))
    for item in dataset.ROIContourSequence:
        item.set_original_encoding(True, True, default_encoding)  # the items' own; their encoded values are ASCII
    with atomic_output(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    if not left_out:
        return None
    return (f"{path}: {left_out} contour(s) enclosing less than {min_contour_area:g} mm² left out "
            "(specks and pinholes; --min-contour-area 0 keeps them)")


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


def _without_specks(mask: np.ndarray, min_pixels: float) -> tuple[np.ndarray, int]:
    """`mask` without its regions (4-connected, as the contours separate them) of fewer than `min_pixels`
    pixels and with its holes (8-connected background enclosed by the mask) of fewer pixels filled; and how many
    regions and holes that were."""
    from scipy import ndimage

    if min_pixels <= 1:
        return mask, 0
    regions, _ = ndimage.label(mask)
    small = np.bincount(regions.ravel()) < min_pixels
    small[0] = False
    mask = mask & ~small[regions]
    if not mask.any():  # all speckle: no holes to look for
        return mask, int(small.sum())
    background, _ = ndimage.label(~mask, structure=np.ones((3, 3), bool))
    pinholes = np.bincount(background.ravel()) < min_pixels
    pinholes[0] = False  # the mask
    pinholes[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False  # outside
    return mask | pinholes[background], int(small.sum() + pinholes.sum())


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


def _class_contours(labels: np.ndarray, label: int, box: tuple[slice, ...],
                    planes: list[tuple[np.ndarray, np.ndarray]], references: list[bytes],
                    min_area: float) -> tuple[list[bytes], int]:
    """The encoded Contour Sequence items of `label` (polygons in patient mm on the slices of its box, each
    referencing its slice by `references[z]`), and the number of regions and holes under `min_area` mm² left
    out."""
    rows, columns = box[1], box[2]
    offset = np.array([rows.start, columns.start], dtype=np.float64)
    items, left_out = [], 0
    for z in range(box[0].start, box[0].stop):
        mask = labels[z, rows, columns] == label
        if not mask.any():
            continue
        position, axes = planes[z]
        mask, dropped = _without_specks(mask, min_area / float(np.prod(np.linalg.norm(axes, axis=1))))
        left_out += dropped
        if not mask.any():
            continue
        items.extend(_contour_item(position + (vertices + offset) @ axes, references[z])
                     for vertices in _slice_contours(mask))
    return items, left_out


def _element(tag: int, value: bytes) -> bytes:
    """A data element in Implicit VR Little Endian (the value padded to even length with a space)."""
    if len(value) % 2:
        value += b" "
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _item(content: bytes) -> bytes:
    """A sequence item of defined length holding the encoded elements `content`."""
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def _uid(value: str) -> bytes:
    """A UI value, padded to even length with NUL as the standard requires."""
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _image_reference_item(source: Any) -> bytes:
    """An encoded Contour Image Sequence item referencing the slice `source` (SOP class and instance)."""
    return _item(_element(REFERENCED_SOP_CLASS, _uid(source.SOPClassUID))
                 + _element(REFERENCED_SOP_INSTANCE, _uid(source.SOPInstanceUID)))


def _contour_item(points: np.ndarray, reference: bytes) -> bytes:
    """An encoded Contour Sequence item: a closed planar polygon of (n, 3) `points` in mm on the referenced slice.
    Encoded directly, as pydicom's per-value objects made a speckled mask take minutes."""
    coordinates = "\\".join(map(_DS_FORMAT, np.round(points, DECIMALS).ravel().tolist()))
    return _item(reference + _element(CONTOUR_GEOMETRIC_TYPE, b"CLOSED_PLANAR")
                 + _element(NUMBER_OF_CONTOUR_POINTS, str(len(points)).encode())
                 + _element(CONTOUR_DATA, coordinates.encode()))


def _roi_contour(label: int, contours: list[bytes]) -> Any:
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import Dataset
    from pydicom.tag import Tag

    item = Dataset()
    item.ROIDisplayColor = [int(round(float(v) * 255.0)) for v in label_color(label)]
    item.ReferencedROINumber = label
    if contours:  # written as encoded: the file's transfer syntax is Implicit VR Little Endian
        value = b"".join(contours)
        item[CONTOUR_SEQUENCE] = RawDataElement(Tag(CONTOUR_SEQUENCE), "SQ", len(value), value, 0, True, True)
    return item


def _structure_set(sources: list[Any], card: ModelCard) -> Any:
    """The RTSTRUCT dataset with its file meta and all modules but the ROI contours."""
    pydicom = _pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset

    first, now = sources[0], datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian  # 32-bit lengths: long contours
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


def _image_reference(source: Any) -> Any:
    from pydicom.dataset import Dataset

    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return reference


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
