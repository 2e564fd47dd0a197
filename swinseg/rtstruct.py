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
separate them) and holes of a slice smaller than a minimum area are left out. Contours are exact unless they would
take more marching-squares steps than the file's budget (CONTOUR_CELLS_PER_SLICE per slice, at least
MIN_CONTOUR_CELLS): then the raggedest class slices (noise, not anatomy) are traced on the finest grid 2, 4, 8, ...
times coarser (block majority) that brings each under one limit, so that any mask makes a structure set a
planning system can load; a note gives the Dice of what was traced to the mask there. The file is Implicit VR
Little Endian (32-bit value lengths: a DS value of 64 KiB holds only ~2,000 points in Explicit VR), and the
Contour Sequences are encoded here directly, in time linear in the points. pydicom is imported only when a
structure set is written."""
from __future__ import annotations

import struct
from dataclasses import dataclass
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
# The budget of marching-squares steps (2x2 pixel windows an outline crosses, about one contour point and 30 bytes
# each) of a file: CONTOUR_CELLS_PER_SLICE per slice (12 MB for 100 slices), at least MIN_CONTOUR_CELLS (8 MB).
# A liver's outline at 0.7 mm takes ~1,000 steps; 50% binary noise 200,000 a slice (188 MB for 100 slices).
CONTOUR_CELLS_PER_SLICE, MIN_CONTOUR_CELLS = 4096, 262_144
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
    tally = _Tally()
    outlines = [[] if box is None else _class_outlines(labels, label, box, planes, min_contour_area, tally)
                for label, box in enumerate(boxes, start=1)]
    limit = _cell_limit([outline.cells for class_outlines in outlines for outline in class_outlines],
                        max(MIN_CONTOUR_CELLS, CONTOUR_CELLS_PER_SLICE * len(sources)))
    dataset.ROIContourSequence = [
        _roi_contour(label, [item for outline in class_outlines
                             for item in _contour_items(outline, limit, planes, references, tally)])
        for label, class_outlines in enumerate(outlines, start=1)]
    # encoded as written: pydicom then writes the raw Contour Sequences as they are, without decoding them first
    dataset.set_original_encoding(True, True, convert_encodings(dataset.SpecificCharacterSet))
    for item in dataset.ROIContourSequence:
        item.set_original_encoding(True, True, default_encoding)  # the items' own; their encoded values are ASCII
    with atomic_output(path) as tmp:
        dataset.save_as(tmp, enforce_file_format=True)
    return tally.note(path, min_contour_area)


@dataclass
class _Tally:
    """What the contours leave out or change of the mask, for the one note line."""

    left_out: int = 0  # regions and holes under the minimum area
    coarsened: int = 0  # class slices traced on a coarser grid
    factor: int = 1  # the largest coarsening
    overlap: int = 0  # voxels of those slices in both the mask and what was traced
    voxels: int = 0  # voxels of those slices in the mask plus in what was traced

    def note(self, path: str | Path, min_area: float) -> str | None:
        parts = []
        if self.left_out:
            parts.append(f"{self.left_out} contour(s) enclosing less than {min_area:g} mm² left out (specks and "
                         "pinholes; --min-contour-area 0 keeps them)")
        if self.coarsened:
            parts.append(f"{self.coarsened} class slice(s) too ragged for exact contours traced on a grid up to "
                         f"{self.factor}x coarser, Dice {2 * self.overlap / max(self.voxels, 1):.2f} to the mask there "
                         "(--output-type seg keeps it exact)")
        return f"{path}: {'; '.join(parts)}" if parts else None


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


def _contour_cells(mask: np.ndarray) -> int:
    """The 2x2 pixel windows (of the zero-padded mask) that its outline crosses: the marching-squares steps."""
    padded = np.pad(mask, 1).view(np.uint8)
    corners = padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]
    return int(np.count_nonzero((corners > 0) & (corners < 4)))


def _cell_limit(cells: list[int], budget: int) -> float:
    """The largest per-outline limit of contour steps under which `cells`, each capped at it, fit `budget`
    (infinite where they fit as they are); at least 64 steps."""
    ordered = sorted(cells, reverse=True)
    rest = sum(ordered)
    if rest <= budget:
        return float("inf")
    for capped, count in enumerate(ordered, start=1):  # cap the `capped` largest
        rest -= count
        limit = (budget - rest) / capped
        if capped == len(ordered) or limit >= ordered[capped]:
            break
    return max(limit, 64.0)


def _traceable(outline: _Outline, limit: float) -> tuple[np.ndarray, int]:
    """The outline's mask, or where its contours take more than `limit` steps its block majority on the finest
    grid 2, 4, 8, ... times coarser where they take fewer; and that factor."""
    mask = outline.mask
    factor, traced, cells = 1, mask, outline.cells
    while cells > limit and factor < max(mask.shape):
        factor *= 2
        rows, columns = -(-mask.shape[0] // factor), -(-mask.shape[1] // factor)
        padded = np.zeros((rows * factor, columns * factor), np.uint8)  # summed in the platform's integers
        padded[: mask.shape[0], : mask.shape[1]] = mask
        traced = padded.reshape(rows, factor, columns, factor).sum(axis=(1, 3)) * 2 >= factor * factor
        cells = _contour_cells(traced)
    return traced, factor


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


@dataclass
class _Outline:
    """A class on one slice, specks left out: its mask within the class's box and its contour steps."""

    z: int
    mask: np.ndarray
    offset: np.ndarray  # (row, column) of the mask's first pixel on the slice
    cells: int


def _class_outlines(labels: np.ndarray, label: int, box: tuple[slice, ...],
                    planes: list[tuple[np.ndarray, np.ndarray]], min_area: float, tally: _Tally) -> list[_Outline]:
    """The outlines of `label` on the slices of its box; the regions and holes under `min_area` mm² left out are
    counted in `tally`."""
    rows, columns = box[1], box[2]
    offset = np.array([rows.start, columns.start], dtype=np.float64)
    outlines = []
    for z in range(box[0].start, box[0].stop):
        mask = labels[z, rows, columns] == label
        if not mask.any():
            continue
        axes = planes[z][1]
        mask, dropped = _without_specks(mask, min_area / float(np.prod(np.linalg.norm(axes, axis=1))))
        tally.left_out += dropped
        if mask.any():
            outlines.append(_Outline(z, mask, offset, _contour_cells(mask)))
    return outlines


def _contour_items(outline: _Outline, limit: float, planes: list[tuple[np.ndarray, np.ndarray]],
                   references: list[bytes], tally: _Tally) -> list[bytes]:
    """The encoded Contour Sequence items of an outline (polygons in patient mm on its slice, referenced by
    `references[z]`), traced on a coarser grid where it takes more than `limit` steps (counted in `tally`)."""
    mask = outline.mask
    traced, factor = _traceable(outline, limit)
    if factor > 1:
        fine = np.repeat(np.repeat(traced, factor, 0), factor, 1)[: mask.shape[0], : mask.shape[1]]
        tally.coarsened, tally.factor = tally.coarsened + 1, max(tally.factor, factor)
        tally.overlap += int(np.count_nonzero(fine & mask))
        tally.voxels += int(np.count_nonzero(fine)) + int(np.count_nonzero(mask))
    position, axes = planes[outline.z]
    # a coarse pixel i covers pixels i*factor ... i*factor + factor - 1: its centre is at i*factor + (factor-1)/2
    return [_contour_item(position + (vertices * factor + (factor - 1) / 2 + outline.offset) @ axes,
                          references[outline.z])
            for vertices in _slice_contours(traced)]


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
