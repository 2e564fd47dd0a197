"""`swinseg to-dicom`: a label map made elsewhere (another tool's NIfTI, a hand annotation) as a DICOM SEG or an
RTSTRUCT on its source series, written by the same writers as predict's, once the mask is known to lie on the
series' grid."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from swinseg import io
from swinseg.choices import MIN_CONTOUR_AREA
from swinseg.config import ModelCard, SwinUnetConfig
from swinseg.dicom_seg import write_dicom_seg
from swinseg.errors import SwinsegError
from swinseg.labels import label_map
from swinseg.rtstruct import write_rtstruct

# the mask's grid against the series': spacing relative, origin in units of the largest spacing (a micrometre
# at 1 mm), direction cosines absolute; loose enough for NIfTI's float32 affines
GRID_TOLERANCE = 1e-3


def labels_card(names: dict[int, str | None], name: str) -> ModelCard:
    """A model card naming label ids 1..max(names) for the writers (an unnamed id is label_K); `name` stands for
    the model in the DICOM header (series description, model name)."""
    count = max(names) + 1
    classes = ["background"] + [names.get(label) or f"label_{label}" for label in range(1, count)]
    return ModelCard(name=name, network=SwinUnetConfig(num_classes=count), classes=classes)


def mask_to_dicom(mask: str | Path, series: str | Path, output: str | Path, output_type: str,
                  card: ModelCard | None = None, series_uid: str | None = None,
                  min_contour_area: float = MIN_CONTOUR_AREA) -> str | None:
    """Write the label map `mask` as `output_type` ("seg" or "rtstruct") on the DICOM series folder `series`
    (`series_uid` picks one of several). Classes: the card's, else label_1..label_K named by id. Returns the
    RTSTRUCT writer's note on contours left out, if any."""
    volume = io.read_volume(series, series=series_uid)
    labelled = io.read_volume(mask)
    try:
        io.check_same_geometry(labelled, volume, rtol=GRID_TOLERANCE)
    except SwinsegError as error:
        raise SwinsegError(f"{mask}: not on the grid of the DICOM series {series} ({error}); resample the mask onto "
                           "the series first") from error
    labels = label_map(labelled.array, mask)
    top = int(labels.max(initial=0))
    if card is None:
        card = labels_card({label: None for label in range(1, max(top, 1) + 1)}, "to-dicom")
    if top >= len(card.classes):
        raise SwinsegError(f"{mask}: label {top} but {card.name} names only labels 1-{len(card.classes) - 1}")
    labels = labels.astype(np.uint8 if len(card.classes) <= 256 else np.uint16)
    if output_type == "seg":
        write_dicom_seg(output, labels, volume, card)
        return None
    return write_rtstruct(output, labels, volume, card, min_contour_area)
