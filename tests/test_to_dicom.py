"""`swinseg to-dicom`: a label map made by another tool (a NIfTI written here with nibabel, not swinseg) as a DICOM
SEG or an RTSTRUCT on its source series, judged by dciodvfy and plastimatch; a mask off the series' grid is
refused in one line that says how it differs."""
from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from dicom_files import dicom_series
from dicom_judges import assert_valid_rtstruct, assert_valid_seg
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.io import Volume, read_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def organs(shape: tuple[int, int, int]) -> np.ndarray:
    """Labels 1 and 2 (z, y, x), large enough for a Dice of 0.98, and a lone pixel of label 2 on 0.8 mm pixels."""
    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint8)
    labels[((y - 15) / 11) ** 2 + ((x - 16) / 12) ** 2 <= 1] = 1
    labels[((y - 30) / 6) ** 2 + ((x - 38) / 7) ** 2 <= 1] = 2
    labels[:, 2, 45] = 2
    return labels


def save_nifti(path: Path, labels: np.ndarray, volume: Volume, shift_mm: float = 0.0,
               spacing_factor: float = 1.0) -> None:
    """`labels` (the volume's array order) as another tool saves a mask: nibabel, (x, y, z) array, RAS affine."""
    direction = np.array(volume.direction).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(np.array(volume.spacing[::-1]) * spacing_factor)
    affine[:3, 3] = LPS_TO_RAS @ (np.array(volume.origin) + shift_mm)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(labels.T), affine), path)


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> tuple[Path, Volume]:
    folder = tmp_path_factory.mktemp("dicom") / "series"
    dicom_series(folder, np.zeros((4, 40, 48), np.int16), pixel_mm=0.8, spacing=2.5)
    return folder, read_volume(folder)


def to_dicom(*args: str):
    return CliRunner().invoke(app, ["to-dicom", *args])


def test_a_nifti_from_elsewhere_becomes_a_seg(series, tmp_path):
    folder, volume = series
    labels = organs(volume.array.shape)
    save_nifti(tmp_path / "mask.nii.gz", labels, volume)
    result = to_dicom(str(tmp_path / "mask.nii.gz"), "--series", str(folder), "-o", str(tmp_path / "seg.dcm"),
                      "--labels", "1=liver,2=spleen")
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'seg.dcm'} (DICOM SEG" in result.stdout
    assert_valid_seg(tmp_path / "seg.dcm")
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    uids = [pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID for file in volume.source_files]
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    np.testing.assert_array_equal(frames, labels)
    assert [seg.get_segment_description(k).segment_label for k in seg.segment_numbers] == ["liver", "spleen"]
    assert seg.get_segment_description(1).segmented_property_type.value == "10200004"  # SNOMED CT liver


def test_a_nifti_from_elsewhere_becomes_an_rtstruct(series, tmp_path):
    folder, volume = series
    labels = organs(volume.array.shape)
    save_nifti(tmp_path / "mask.nii.gz", labels, volume)
    result = to_dicom(str(tmp_path / "mask.nii.gz"), "--series", str(folder), "-o", str(tmp_path / "rt.dcm"),
                      "--output-type", "rtstruct", "-m", "swin_unet_test")
    assert result.exit_code == 0, result.output
    assert "warning: " in result.stderr and "4 contour(s) enclosing less than 5 mm² left out" in result.stderr
    kept = labels.copy()
    kept[:, 2, 45] = 0  # the lone pixels (0.64 mm²)
    names = ("background", "liver", "spleen")  # the card's first classes
    assert_valid_rtstruct(tmp_path / "rt.dcm", kept, volume, names, tmp_path / "judge")
    rt = pydicom.dcmread(tmp_path / "rt.dcm")
    assert [roi.ROIName for roi in rt.StructureSetROISequence][:2] == ["liver", "spleen"]
    again = to_dicom(str(tmp_path / "mask.nii.gz"), "--series", str(folder), "-o", str(tmp_path / "rt.dcm"),
                     "--output-type", "rtstruct", "--min-contour-area", "0", "--overwrite")
    assert again.exit_code == 0 and "warning" not in again.stderr, again.output
    assert_valid_rtstruct(tmp_path / "rt.dcm", labels, volume, ("background", "label_1", "label_2"),
                          tmp_path / "judge_all")


@pytest.mark.parametrize(("change", "message"), [
    ({"shift_mm": 1.5}, "origin (-8.5, 21.5, 1.5) vs (-10, 20, 0)"),
    ({"spacing_factor": 1.25}, "spacing (3.125, 1, 1) vs (2.5, 0.8, 0.8)"),
    ({"crop": True}, "shape (4, 40, 40) vs (4, 40, 48)"),
])
def test_a_mask_off_the_series_grid_is_refused_in_one_line(series, tmp_path, change, message):
    folder, volume = series
    labels = organs(volume.array.shape)
    if change.pop("crop", False):
        labels = labels[:, :, :40]
    save_nifti(tmp_path / "mask.nii.gz", labels, volume, **change)
    result = to_dicom(str(tmp_path / "mask.nii.gz"), "--series", str(folder), "-o", str(tmp_path / "seg.dcm"))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"mask.nii.gz: not on the grid of the DICOM series {folder} (geometry differs between mask.nii.gz and " \
           f"series: {message}); resample the mask onto the series first" in result.stderr, result.stderr
    assert not (tmp_path / "seg.dcm").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--labels", "liver"], "mask.nii.gz: label 2 but to-dicom names only labels 1-1"),
    (["-o", "out.nii.gz"], "a DICOM file; name it .dcm"),
    (["--labels", "liver", "-m", "swin_unet_test"], "give --model or --labels, not both"),
])
def test_what_cannot_be_written_is_refused(series, tmp_path, args, message):
    folder, volume = series
    save_nifti(tmp_path / "mask.nii.gz", organs(volume.array.shape), volume)
    result = to_dicom(str(tmp_path / "mask.nii.gz"), "--series", str(folder), "-o", str(tmp_path / "seg.dcm"), *args)
    assert result.exit_code == 1 and message in result.stderr, result.output
    assert not (tmp_path / "seg.dcm").exists()
