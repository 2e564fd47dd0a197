"""DICOM SEG output: predict a DICOM series to a Segmentation object that reads back, frame by frame on the
source images, exactly as the NIfTI mask of the same run."""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_files import dicom_series
from dicom_judges import assert_valid_seg
from shared_files import EXAMPLE_CT
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.config import load_card
from swinseg.io import read_volume


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> Path:
    """12 slices of the real CT (random HU where ../shared is absent) as a CT DICOM series."""
    if EXAMPLE_CT.exists():
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(EXAMPLE_CT)))[60:72].astype(np.int16)
    else:
        ct = np.random.default_rng(0).integers(-1000, 1000, (12, 40, 48)).astype(np.int16)
    folder = tmp_path_factory.mktemp("dicom") / "patient"
    dicom_series(folder, ct)
    return folder


def test_seg_reads_back_as_the_nifti_mask(series, checkpoint, tmp_path):
    nifti, seg_path = tmp_path / "mask.nii.gz", tmp_path / "mask.dcm"
    for out in (nifti, seg_path):
        result = CliRunner().invoke(app, ["predict", str(series), "-c", str(checkpoint), "-o", str(out)])
        assert result.exit_code == 0, result.output
    assert_valid_seg(seg_path)
    mask = np.asarray(nib.load(nifti).dataobj).T  # (z, y, x) as the series' slices
    volume = read_volume(series)
    seg = hd.seg.segread(seg_path)
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in volume.source_files]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    np.testing.assert_array_equal(frames, mask)
    assert mask.any()
    card = load_card("swin_unet_test")
    names = [seg.get_segment_description(k).segment_label for k in seg.segment_numbers]
    assert names == list(card.classes[1:])
    liver = seg.get_segment_description(card.classes.index("liver"))
    assert liver.segmented_property_type.value == "10200004"  # SNOMED CT liver
    source = pydicom.dcmread(volume.source_files[0], stop_before_pixels=True)
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    assert seg.ManufacturerModelName == card.name


def test_seg_of_a_nifti_input_is_refused_before_predicting(checkpoint, tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.int16), np.eye(4)), tmp_path / "scan.nii.gz")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "scan.nii.gz"), "-c", str(checkpoint),
                                      "-o", str(tmp_path / "mask.dcm")])
    assert result.exit_code == 1
    assert "scan.nii.gz: a DICOM SEG references its source DICOM series" in result.stderr
    assert not (tmp_path / "mask.dcm").exists()


def test_output_type_names_seg_files_in_a_folder(series, checkpoint, tmp_path):
    result = CliRunner().invoke(app, ["predict", str(series.parent), "-c", str(checkpoint), "-o",
                                      str(tmp_path / "out"), "--output-type", "dicom-seg"])
    assert result.exit_code == 0, result.output
    assert hd.seg.segread(tmp_path / "out" / "patient.dcm").NumberOfFrames > 0
    assert_valid_seg(tmp_path / "out" / "patient.dcm")


def test_a_card_gives_its_own_segment_codes(series, tmp_path):
    import dataclasses

    from swinseg.dicom_seg import segment_descriptions
    from swinseg.errors import SwinsegError

    card = load_card("swin_unet_test")
    coded = dataclasses.replace(card, segment_codes={
        "aorta": {"type": ["SCT", "261403002", "Abdominal aorta"]},
        "spleen": {"type": ["99LOCAL", "S1", "Accessory spleen"], "category": ["SCT", "49755003", "Morphologically "
                                                                                  "abnormal structure"]},
    })
    by_label = {d.segment_number: d for d in segment_descriptions(coded)}
    aorta, spleen = by_label[card.classes.index("aorta")], by_label[card.classes.index("spleen")]
    assert aorta.segmented_property_type.value == "261403002"
    assert aorta.segmented_property_category.value == "91723000"  # anatomical structure
    assert (spleen.segmented_property_type.scheme_designator, spleen.segmented_property_type.value) == ("99LOCAL", "S1")
    assert spleen.segmented_property_category.value == "49755003"
    assert by_label[card.classes.index("liver")].segmented_property_type.value == "10200004"  # the table still
    restored = type(card).from_dict(coded.to_dict())
    assert restored.segment_codes == coded.segment_codes  # checkpoints carry the codes
    assert "aorta" not in coded.with_classes(["background", "liver"]).segment_codes
    for bad, message in (({"bone": {"type": ["SCT", "1", "x"]}}, "not a foreground class"),
                         ({"liver": {"type": ["SCT", "1"]}}, "expected \\[SCHEME, VALUE, MEANING\\]"),
                         ({"liver": ["SCT", "1", "x"]}, "expected \\{type"),
                         ({"liver": {"type": ["SCT", None, "x"]}}, "expected \\[SCHEME"),
                         ({"liver": {"type": ["SCT", "  ", "x"]}}, "expected \\[SCHEME"),
                         (["liver"], "expected a mapping")):
        with pytest.raises(SwinsegError, match=message):
            dataclasses.replace(card, segment_codes=bad)
