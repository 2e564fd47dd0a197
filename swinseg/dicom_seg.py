"""DICOM SEG output: a predicted label map as a Segmentation object that references its source DICOM series
(study, frame of reference, one frame per source slice), ready for PACS and viewers (OHIF, 3D Slicer).

Segments are the card's foreground classes (segment number = label id), coded as the card's `segment_codes`
say, else with SNOMED CT where the class is a known organ (otherwise generic "Tissue"), coloured as swinseg's
overlays, with swinseg as the algorithm. highdicom and pydicom are imported only when a SEG is written."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from swinseg import __version__
from swinseg.config import ModelCard
from swinseg.errors import SwinsegError
from swinseg.io import Volume, atomic_output
from swinseg.overlay import label_color

SUFFIX = ".dcm"
# type 2 patient and study attributes that de-identification (DICOM PS3.15 basic profile) empties or removes:
# a SEG or RTSTRUCT copies them, so removed ones are set empty on the headers read
DEIDENTIFIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
                "AccessionNumber", "ReferringPhysicianName")
# what a SEG or RTSTRUCT must reference and nothing can recover: (keyword, what it identifies)
REFERENCED = (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series"),
              ("FrameOfReferenceUID", "frame of reference"))
# class name -> the attribute of pydicom's SNOMED CT code dictionary (codes.SCT) for it
ORGAN_CODES = {
    "liver": "Liver", "spleen": "Spleen", "kidney_left": "Kidney", "kidney_right": "Kidney", "kidney": "Kidney",
    "aorta": "Aorta", "gallbladder": "Gallbladder", "pancreas": "Pancreas", "stomach": "Stomach",
    "colon": "Colon", "esophagus": "Esophagus", "duodenum": "Duodenum", "heart": "Heart", "lung": "Lung",
    "inferior_vena_cava": "InferiorVenaCava", "portal_vein": "PortalVein", "adrenal_gland": "AdrenalGland",
}


def _hd() -> Any:
    try:
        import highdicom
    except ImportError as error:
        raise SwinsegError("DICOM SEG output needs highdicom: pip install 'swinseg[dicom]'") from error
    return highdicom


def segment_descriptions(card: ModelCard) -> list[Any]:
    """One highdicom SegmentDescription per foreground class of the card (segment number = label id)."""
    hd = _hd()
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name="swinseg", version=__version__, family=codes.cid7162.ArtificialIntelligence,
        parameters={"model": card.name},
    )
    descriptions = []
    for label, name in enumerate(card.classes[1:], start=1):
        organ = ORGAN_CODES.get(name.lower())
        category = codes.SCT.AnatomicalStructure if organ else codes.SCT.Tissue
        kind = getattr(codes.SCT, organ) if organ else codes.SCT.Tissue
        given = card.segment_codes.get(name, {})
        if "type" in given:
            scheme, value, meaning = given["type"]
            kind, category = hd.sr.CodedConcept(value, scheme, meaning), codes.SCT.AnatomicalStructure
        if "category" in given:
            scheme, value, meaning = given["category"]
            category = hd.sr.CodedConcept(value, scheme, meaning)
        red, green, blue = (float(v) * 255.0 for v in label_color(label))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=label, segment_label=name, segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, display_color=hd.color.CIELabColor.from_rgb(red, green, blue),
        ))
    return descriptions


def check_source_series(labels: np.ndarray, volume: Volume, card: ModelCard, what: str) -> None:
    """Refuse to write `what` (a DICOM object that references source images: "a DICOM SEG", "an RTSTRUCT") for
    a volume that is not an untouched DICOM series, or labels the card does not name."""
    if volume.notes:
        raise SwinsegError(f"{volume.path}: the series was interpolated onto a uniform grid (--allow-gaps), so the "
                           "mask has no source slices to reference; write NIfTI instead")
    if not volume.source_files:
        where = volume.path if volume.path is not None else "the input"
        raise SwinsegError(f"{where}: not a DICOM series; {what} references its source images, so write "
                           "NIfTI/NRRD for this input")
    if labels.max(initial=0) >= len(card.classes):
        raise SwinsegError(f"label {int(labels.max())} beyond the card's {len(card.classes)} classes")


def read_sources(volume: Volume) -> list[Any]:
    """The headers (no pixels) of the series' slice files as a SEG or RTSTRUCT references them, repaired where
    de-identification left them incomplete: an empty or missing SOP class or instance UID is taken from the file
    meta (MediaStorageSOPClassUID, MediaStorageSOPInstanceUID), removed DEIDENTIFIED attributes are set empty.
    A slice without a study, series or frame-of-reference UID is refused: nothing can recover it."""
    import pydicom

    headers = []
    for file in volume.source_files:
        header = pydicom.dcmread(file, stop_before_pixels=True)
        meta = getattr(header, "file_meta", None) or {}
        for keyword in ("SOPClassUID", "SOPInstanceUID"):
            if not header.get(keyword):
                value = meta.get(f"MediaStorage{keyword}")
                if not value:
                    raise SwinsegError(f"{file}: no {keyword}, in the data set or the file meta; a SEG or RTSTRUCT "
                                       "must reference each source image by it")
                setattr(header, keyword, value)
        for keyword, what in REFERENCED:
            if not header.get(keyword):
                raise SwinsegError(f"{file}: no {keyword} (removed by de-identification?); a SEG or RTSTRUCT must "
                                   f"reference the source {what}, and nothing else identifies it")
        for keyword in DEIDENTIFIED:
            if keyword not in header:
                setattr(header, keyword, "")
        headers.append(header)
    seen: dict[str, str] = {}
    for file, header in zip(volume.source_files, headers):
        other = seen.setdefault(str(header.SOPInstanceUID), file)
        if other != file:
            raise SwinsegError(f"{file}: SOPInstanceUID {header.SOPInstanceUID} also on {other}; a SEG or RTSTRUCT "
                               "references each source image by it")
    return headers


@contextmanager
def _quiet_highdicom() -> Iterator[None]:
    """highdicom's logged warnings kept off the terminal, where a library's messages never go raw (what they
    concern, such as duplicate source images, read_sources refuses itself)."""
    logger = logging.getLogger("highdicom")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_dicom_seg(path: str | Path, labels: np.ndarray, volume: Volume, card: ModelCard) -> None:
    """Write `labels` (the volume's array order) as a DICOM SEG referencing the series `volume` was read from."""
    check_source_series(labels, volume, card, "a DICOM SEG")
    hd = _hd()
    sources = read_sources(volume)
    try:
        with _quiet_highdicom():
            seg = hd.seg.Segmentation(
                source_images=sources, pixel_array=np.ascontiguousarray(labels, dtype=np.uint8),
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=segment_descriptions(card),
                series_instance_uid=hd.UID(), series_number=9901, sop_instance_uid=hd.UID(), instance_number=1,
                manufacturer="swinseg", manufacturer_model_name=card.name, software_versions=__version__,
                device_serial_number="1", series_description=f"swinseg {card.name}", omit_empty_frames=False,
            )
    except (ValueError, AttributeError, TypeError) as error:
        raise SwinsegError(f"{volume.path}: cannot build a DICOM SEG on this series ({error})") from error
    with atomic_output(path) as tmp:
        seg.save_as(tmp)
