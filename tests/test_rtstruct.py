"""RTSTRUCT output: contours written on a DICOM series rasterise back, through each referenced slice's own
position, orientation and pixel spacing (read here from the slice files, not from the writer), onto the mask
they were made from, on axis-aligned and oblique, row-flipped series."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_files import dicom_series
from dicom_judges import assert_valid_dicom, assert_valid_rtstruct
from shared_files import EXAMPLE_CT, EXAMPLE_SEG, needs_shared
from skimage.draw import polygon2mask

from swinseg.config import load_card
from swinseg.errors import SwinsegError
from swinseg.io import Volume, read_volume, write_volume
from swinseg.overlay import label_color
from swinseg.rtstruct import write_rtstruct

CARD = load_card("swin_unet_test")  # background, liver, spleen, kidney_left, kidney_right, aorta
ABSENT = 3  # kidney_left: no voxel in the phantom
# TotalSegmentator ids of the card's classes in the real CT's reference segmentation
TOTALSEG = {1: 5, 2: 1, 3: 3, 4: 2, 5: 52}


def phantom(shape: tuple[int, int, int] = (8, 40, 48)) -> np.ndarray:
    """Organ-shaped label map (z, y, x): a liver ring with an island in its hole, a spleen cut by the image
    border, two kidney blobs of one class, a thin aorta with single and diagonally touching pixels; no
    kidney_left."""
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(np.float64)
    labels = np.zeros(shape, np.uint8)
    liver = ((y - 18) / 12) ** 2 + ((x - 16) / 13) ** 2 + ((z - 4) / 5) ** 2 <= 1
    hole = ((y - 18) / 6) ** 2 + ((x - 16) / 6) ** 2 <= 1
    labels[liver & ~hole] = 1
    labels[(((y - 18) / 2) ** 2 + ((x - 16) / 2) ** 2 <= 1) & liver] = 1  # island inside the hole
    labels[((y - 5) / 7) ** 2 + ((x - 44) / 7) ** 2 + ((z - 3) / 4) ** 2 <= 1] = 2  # cut by the top/right border
    for centre in (28, 40):
        labels[((y - 32) / 4) ** 2 + ((x - centre) / 3) ** 2 + ((z - 4) / 3) ** 2 <= 1] = 4
    labels[:, 20:22, 36:38] = 5
    labels[2, 24, 36] = labels[2, 25, 37] = labels[2, 26, 38] = 5  # diagonal run of single pixels
    assert not (labels == ABSENT).any() and ((labels == 1) & hole).any()
    return labels


def reorient(files: list[Path], row: np.ndarray, column: np.ndarray, pixel_spacing: tuple[float, float],
             slice_spacing: float) -> None:
    """Give the series another orientation and anisotropic pixels: file k is placed -k*slice_spacing along the
    normal, so that the series' slice order is the reverse of the file order."""
    normal = np.cross(row, column)
    for k, file in enumerate(files):
        header = pydicom.dcmread(file)
        header.ImageOrientationPatient = [round(float(v), 8) for v in np.r_[row, column]]
        header.ImagePositionPatient = [round(float(v), 6) for v in np.array([12.0, -30.0, 50.0]) - k * slice_spacing
                                       * normal]
        header.PixelSpacing = list(pixel_spacing)
        header.save_as(file)


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def encoded_series(folder: Path, truth: np.ndarray, oblique: bool) -> tuple[Volume, list[Path]]:
    """A CT series whose pixel values are 100 x `truth` (file k holds truth[k]), read back with swinseg; and its
    files in file order."""
    files = dicom_series(folder, truth.astype(np.int16) * 100, spacing=2.5, pixel_mm=0.8)
    if oblique:
        turn = rotation(np.array([1.0, 2.0, 0.5]), 25.0)
        reorient(files, turn @ np.array([-1.0, 0.0, 0.0]), turn @ np.array([0.0, 1.0, 0.0]), (0.7, 0.9), 3.0)
    return read_volume(folder), files


def rasterise(path: Path, files: list[Path], shape: tuple[int, ...]) -> dict[int, np.ndarray]:
    """ROI number -> mask in file order (slice k on files[k]), from each contour mapped onto its referenced
    slice (XOR per slice); asserts every contour lies in its slice's plane."""
    rtstruct = pydicom.dcmread(path)
    headers = [pydicom.dcmread(file, stop_before_pixels=True) for file in files]
    index = {header.SOPInstanceUID: k for k, header in enumerate(headers)}
    masks = {}
    for roi in rtstruct.ROIContourSequence:
        mask = np.zeros(shape, bool)
        for contour in roi.get("ContourSequence", []):
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            k = index[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
            header = headers[k]
            points = np.array(contour.ContourData, dtype=np.float64).reshape(-1, 3)
            assert len(points) == contour.NumberOfContourPoints >= 3
            offset = points - np.array(header.ImagePositionPatient, dtype=np.float64)
            orientation = np.array(header.ImageOrientationPatient, dtype=np.float64)
            row_cosines, column_cosines = orientation[:3], orientation[3:]
            np.testing.assert_allclose(offset @ np.cross(row_cosines, column_cosines), 0.0, atol=2e-3)
            rows = offset @ column_cosines / float(header.PixelSpacing[0])
            columns = offset @ row_cosines / float(header.PixelSpacing[1])
            mask[k] ^= polygon2mask(shape[1:], np.column_stack([rows, columns]))
        masks[int(roi.ReferencedROINumber)] = mask
    return masks


def assert_matches(masks: dict[int, np.ndarray], truth: np.ndarray, min_dice: float) -> None:
    assert sorted(masks) == list(range(1, len(CARD.classes)))
    for label, mask in masks.items():
        expected = truth == label
        if not expected.any():
            assert not mask.any(), label
            continue
        dice = 2.0 * np.sum(mask & expected) / (mask.sum() + expected.sum())
        assert dice >= min_dice, (label, dice)
        assert abs(int(mask.sum()) - int(expected.sum())) <= max(2, 0.01 * expected.sum()), label


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique-flipped"])
def test_contours_rasterise_back_onto_the_mask(tmp_path, oblique):
    truth = phantom()
    volume, files = encoded_series(tmp_path / "series", truth, oblique)
    labels = (volume.array // 100).astype(np.uint8)  # the volume's array order, as predict hands it over
    assert write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD, min_contour_area=0) is None
    assert_valid_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD.classes, tmp_path / "judge")
    assert_matches(rasterise(tmp_path / "rt.dcm", files, truth.shape), truth, min_dice=0.97)
    if oblique:  # the series' slice order really is the reverse of the file order
        assert [Path(file) for file in volume.source_files] == files[::-1]


def test_header_references_the_source_series(tmp_path):
    truth = phantom()
    volume, _ = encoded_series(tmp_path / "series", truth, oblique=False)
    labels = (volume.array // 100).astype(np.uint8)
    write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD, min_contour_area=0)
    assert_valid_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD.classes, tmp_path / "judge")
    rt = pydicom.dcmread(tmp_path / "rt.dcm")
    sources = [pydicom.dcmread(file, stop_before_pixels=True) for file in volume.source_files]
    source = sources[0]
    assert rt.SOPClassUID == rt.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert rt.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian  # 32-bit lengths: long contours
    assert rt.Modality == "RTSTRUCT"
    assert rt.SeriesInstanceUID != source.SeriesInstanceUID and rt.SOPInstanceUID != source.SOPInstanceUID
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "StudyID", "AccessionNumber",
                    "FrameOfReferenceUID"):
        assert rt[keyword].value == source[keyword].value, keyword
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == source.FrameOfReferenceUID
    study = frame.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == source.StudyInstanceUID
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert [item.ReferencedSOPInstanceUID for item in series.ContourImageSequence] == [
        s.SOPInstanceUID for s in sources]
    assert {item.ReferencedSOPClassUID for item in series.ContourImageSequence} == {source.SOPClassUID}
    rois = rt.StructureSetROISequence
    assert [roi.ROIName for roi in rois] == list(CARD.classes[1:])
    assert [roi.ROINumber for roi in rois] == list(range(1, len(CARD.classes)))
    assert {roi.ROIGenerationAlgorithm for roi in rois} == {"AUTOMATIC"}
    assert {roi.ReferencedFrameOfReferenceUID for roi in rois} == {source.FrameOfReferenceUID}
    assert [o.ROIObservationLabel for o in rt.RTROIObservationsSequence] == list(CARD.classes[1:])
    assert {o.RTROIInterpretedType for o in rt.RTROIObservationsSequence} == {"ORGAN"}
    for item in rt.ROIContourSequence:
        label = int(item.ReferencedROINumber)
        assert list(item.ROIDisplayColor) == [int(round(255 * float(v))) for v in label_color(label)]
        assert ("ContourSequence" in item) == (label != ABSENT)
    assert rt.ManufacturerModelName == CARD.name and rt.SeriesDescription == f"swinseg {CARD.name}"


def test_non_dicom_input_is_refused(tmp_path):
    scan = tmp_path / "scan.nii.gz"
    write_volume(scan, np.zeros((2, 8, 8), np.int16), Volume(np.zeros((2, 8, 8)), (2.0, 1.0, 1.0), (0.0,) * 3,
                                                             tuple(np.eye(3).ravel())))
    volume = read_volume(scan)
    with pytest.raises(SwinsegError, match="scan.nii.gz: not a DICOM series"):
        write_rtstruct(tmp_path / "rt.dcm", np.zeros((2, 8, 8), np.uint8), volume, CARD)
    assert not (tmp_path / "rt.dcm").exists()


def test_interpolated_series_is_refused(tmp_path):
    files = dicom_series(tmp_path / "series", np.zeros((5, 8, 8), np.int16))
    files[2].unlink()  # a missing slice: read only with --allow-gaps, onto an interpolated grid
    volume = read_volume(tmp_path / "series", allow_gaps=True)
    assert volume.notes
    with pytest.raises(SwinsegError, match="interpolated onto a uniform grid"):
        write_rtstruct(tmp_path / "rt.dcm", np.zeros(volume.array.shape, np.uint8), volume, CARD)
    assert not (tmp_path / "rt.dcm").exists()


@pytest.mark.parametrize(("shape", "value", "message"), [
    ((3, 8, 8), 6, "label 6 beyond the card's 6 classes"),
    ((3, 8, 9), 1, r"mask shape \(3, 8, 9\) does not match the series' \(3, 8, 8\)"),
])
def test_mask_not_fitting_the_card_or_series_is_refused(tmp_path, shape, value, message):
    dicom_series(tmp_path / "series", np.zeros((3, 8, 8), np.int16))
    labels = np.zeros(shape, np.uint8)
    labels[1, 2, 2] = value
    with pytest.raises(SwinsegError, match=message):
        write_rtstruct(tmp_path / "rt.dcm", labels, read_volume(tmp_path / "series"), CARD)


def test_missing_pydicom_is_explained(tmp_path, monkeypatch):
    dicom_series(tmp_path / "series", np.zeros((3, 8, 8), np.int16))
    volume = read_volume(tmp_path / "series")
    monkeypatch.setitem(sys.modules, "pydicom", None)
    with pytest.raises(SwinsegError, match=r"RTSTRUCT output needs pydicom: pip install 'swinseg\[dicom\]'"):
        write_rtstruct(tmp_path / "rt.dcm", np.zeros((3, 8, 8), np.uint8), volume, CARD)


@needs_shared
def test_real_ct_organs_rasterise_back(tmp_path):
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(EXAMPLE_CT)))[84:96].astype(np.int16)
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(EXAMPLE_SEG)))[84:96]
    truth = np.zeros(reference.shape, np.uint8)
    for label, totalseg in TOTALSEG.items():
        truth[reference == totalseg] = label
    files = dicom_series(tmp_path / "series", ct)
    volume = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(volume.array, ct)
    write_rtstruct(tmp_path / "rt.dcm", truth, volume, CARD, min_contour_area=0)
    assert_valid_rtstruct(tmp_path / "rt.dcm", truth, volume, CARD.classes, tmp_path / "judge")
    masks = rasterise(tmp_path / "rt.dcm", files, truth.shape)
    assert all((truth == label).sum() > 100 for label in TOTALSEG)
    assert_matches(masks, truth, min_dice=0.95)


@pytest.mark.slow
def test_predict_writes_an_rtstruct_matching_the_nifti_mask_of_the_run(tmp_path, checkpoint):
    from typer.testing import CliRunner

    from swinseg.cli import app

    if EXAMPLE_CT.exists():
        ct = sitk.GetArrayFromImage(sitk.ReadImage(str(EXAMPLE_CT)))[60:66].astype(np.int16)
    else:
        ct = np.random.default_rng(0).integers(-1000, 1000, (6, 40, 48)).astype(np.int16)
    dicom_series(tmp_path / "series", ct, spacing=3.0, pixel_mm=3.0)
    runner = CliRunner()
    for args in (["-o", str(tmp_path / "mask.nii.gz")], ["-o", str(tmp_path / "rt.dcm"), "--output-type", "rtstruct"]):
        result = runner.invoke(app, ["predict", str(tmp_path / "series"), "-c", str(checkpoint), *args])
        assert result.exit_code == 0, result.output
    assert pydicom.dcmread(tmp_path / "rt.dcm").SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    mask = read_volume(tmp_path / "mask.nii.gz").array
    assert len(np.unique(mask)) > 1
    series = read_volume(tmp_path / "series")
    assert_valid_rtstruct(tmp_path / "rt.dcm", mask, series, CARD.classes, tmp_path / "judge")
    source = [Path(file) for file in series.source_files]
    assert_matches(rasterise(tmp_path / "rt.dcm", source, mask.shape), mask, min_dice=0.97)
    coarse = runner.invoke(app, ["predict", str(tmp_path / "series"), "-c", str(checkpoint), "-o", str(tmp_path /
                                 "coarse.dcm"), "--output-type", "rtstruct", "--min-contour-area", "1e5"])
    assert coarse.exit_code == 0, coarse.output
    assert coarse.stderr.count("warning:") == 1 and "enclosing less than 100000 mm² left out" in coarse.stderr
    assert "ContourSequence" not in pydicom.dcmread(tmp_path / "coarse.dcm").ROIContourSequence[0]
    assert_valid_rtstruct(tmp_path / "coarse.dcm", np.zeros_like(mask), series, CARD.classes, tmp_path / "judge_coarse")
    refused = runner.invoke(app, ["predict", str(tmp_path / "series"), "-c", str(checkpoint), "-o",
                                  str(tmp_path / "rt.nii.gz"), "--output-type", "rtstruct"])
    assert refused.exit_code == 1 and "an RTSTRUCT is a DICOM file; name it .dcm" in refused.stderr
    write_volume(tmp_path / "scan.nii.gz", ct.astype(np.float32), read_volume(tmp_path / "series"))
    refused = runner.invoke(app, ["predict", str(tmp_path / "scan.nii.gz"), "-c", str(checkpoint), "-o",
                                  str(tmp_path / "out") + "/", "--output-type", "rtstruct"])
    assert refused.exit_code == 1 and "an RTSTRUCT references its source DICOM series" in refused.stderr


def test_long_and_non_ascii_names_fit_their_value_representations(tmp_path):
    import warnings

    volume, _ = encoded_series(tmp_path / "series", phantom(), oblique=False)
    names = ["background"] + [f"Milz_ä_肝_structure_{k}_with_a_long_name" for k in range(1, len(CARD.classes))]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydicom warns on over-long values and on characters it cannot encode
        labels = (volume.array // 100).astype(np.uint8)
        write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD.with_classes(names), min_contour_area=0)
        rtstruct = pydicom.dcmread(tmp_path / "rt.dcm")
        rtstruct.RTROIObservationsSequence[0].ROIObservationLabel  # noqa: B018 - decoding validates the value
    assert rtstruct.StructureSetROISequence[0].ROIName == names[1]
    label = rtstruct.RTROIObservationsSequence[0].ROIObservationLabel
    assert names[1].startswith(label) and len(label.encode()) <= 16 < len(names[1])  # SH: at most 16
    assert rtstruct.RTROIObservationsSequence[0].RTROIInterpretedType == ""  # not an organ of the table
    assert_valid_rtstruct(tmp_path / "rt.dcm", labels, volume, names, tmp_path / "judge")


def speckled(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(label map, what an RTSTRUCT with the default minimum area of 5 mm² on 0.8 mm pixels (0.64 mm² each, so
    regions and holes under 7.8 pixels go) keeps of it): on every slice a liver square with a 2-pixel pinhole
    (filled) and a 16-pixel hole (kept), lone spleen pixels and a 3-pixel speck (dropped), a 9-pixel aorta
    (kept)."""
    labels = np.zeros(shape, np.uint8)
    labels[:, 4:24, 4:24] = 1
    labels[:, 8:9, 8:10] = 0  # pinhole
    labels[:, 14:18, 14:18] = 0  # hole
    labels[:, 30, 30] = labels[:, 34, 40] = labels[:, 2, 40] = 2
    labels[:, 30:33, 36] = 2
    labels[:, 36:39, 4:7] = 5
    kept = labels.copy()
    kept[:, 8:9, 8:10] = 1
    kept[kept == 2] = 0
    return labels, kept


def test_specks_and_pinholes_are_left_out_and_counted(tmp_path):
    labels, kept = speckled((3, 40, 48))
    files = dicom_series(tmp_path / "series", np.zeros(labels.shape, np.int16), pixel_mm=0.8)
    volume = read_volume(tmp_path / "series")
    note = write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD)
    assert note == (f"{tmp_path / 'rt.dcm'}: 15 contour(s) enclosing less than 5 mm² left out (specks and pinholes; "
                    "--min-contour-area 0 keeps them)")  # per slice: 3 lone pixels, a speck, a pinhole
    assert_valid_rtstruct(tmp_path / "rt.dcm", kept, volume, CARD.classes, tmp_path / "judge")
    masks = rasterise(tmp_path / "rt.dcm", files, labels.shape)
    for label in range(1, len(CARD.classes)):
        np.testing.assert_array_equal(masks[label], kept == label)
    assert write_rtstruct(tmp_path / "all.dcm", labels, volume, CARD, min_contour_area=0) is None
    assert_valid_rtstruct(tmp_path / "all.dcm", labels, volume, CARD.classes, tmp_path / "judge_all")


def test_a_speckled_mask_is_written_fast_and_small(tmp_path):
    """Random labels on every voxel of a 512x512 series (what made 20 slices take 473 s and 199 MB): linear time,
    a generous bound here (benchmarks/rtstruct_speed.py measures 100 slices)."""
    import time

    dicom_series(tmp_path / "series", np.zeros((4, 512, 512), np.int16), pixel_mm=0.7)
    volume = read_volume(tmp_path / "series")
    labels = np.random.default_rng(0).integers(0, len(CARD.classes), volume.array.shape).astype(np.uint8)
    began = time.perf_counter()
    note = write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD)
    assert time.perf_counter() - began < 10.0
    assert (tmp_path / "rt.dcm").stat().st_size < 1_000_000 and "left out" in note
    assert_valid_rtstruct(tmp_path / "rt.dcm", np.zeros_like(labels), volume, CARD.classes, tmp_path / "judge")


def test_a_contour_beyond_64_kib_is_written(tmp_path):
    """A square with a notched border: one contour of about 6,000 points, whose ContourData (~150 kB) would not fit
    the 16-bit value length of Explicit VR; the file is Implicit VR, and valid."""
    dicom_series(tmp_path / "series", np.zeros((1, 512, 512), np.int16), pixel_mm=0.7)
    volume = read_volume(tmp_path / "series")
    labels = np.zeros(volume.array.shape, np.uint8)
    labels[0, 4:508, 4:508] = 1
    for edge in (4, 5, 506, 507):
        labels[0, edge, 4:508:2] = labels[0, 4:508:2, edge] = 0
    assert write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD, min_contour_area=0) is None  # traced exactly
    contours = pydicom.dcmread(tmp_path / "rt.dcm").ROIContourSequence[0].ContourSequence
    longest = max(contours, key=lambda contour: int(contour.NumberOfContourPoints))
    assert len("\\".join(str(value) for value in longest.ContourData)) > 65534
    assert_valid_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD.classes, tmp_path / "judge")


def test_contours_beyond_the_files_budget_follow_a_coarser_grid(tmp_path, monkeypatch):
    """A square with a pinhole in every 2x2 block (min area 0 keeps them: 1,600 contour steps a slice, over a
    budget of 1,000 for two slices) is traced on a grid twice as coarse, where the block majority is the square
    itself; the contours land on it (not half a pixel off) and the note gives the Dice to the mask. Within the
    budget the same slice is exact; 50% binary noise gives a valid file within the budget."""
    from swinseg import rtstruct

    monkeypatch.setattr(rtstruct, "MIN_CONTOUR_CELLS", 1000)
    monkeypatch.setattr(rtstruct, "CONTOUR_CELLS_PER_SLICE", 100)
    files = dicom_series(tmp_path / "series", np.zeros((2, 64, 64), np.int16), pixel_mm=0.7)
    volume = read_volume(tmp_path / "series")
    square = np.zeros(volume.array.shape, bool)
    square[:, 12:52, 12:52] = True
    labels = square.astype(np.uint8)
    labels[:, 12:52:2, 12:52:2] = 0
    note = write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD, min_contour_area=0)
    assert note == (f"{tmp_path / 'rt.dcm'}: 2 class slice(s) too ragged for exact contours traced on a grid up to "
                    "2x coarser, Dice 0.86 to the mask there (--output-type seg keeps it exact)")
    masks = rasterise(tmp_path / "rt.dcm", files, labels.shape)
    assert np.count_nonzero(masks[1] != square) <= 2 * 4  # the cut corners at most
    assert_valid_rtstruct(tmp_path / "rt.dcm", square.astype(np.uint8), volume, CARD.classes, tmp_path / "judge")
    dicom_series(tmp_path / "one", np.zeros((1, 64, 64), np.int16), pixel_mm=0.7)
    one = read_volume(tmp_path / "one")
    monkeypatch.setattr(rtstruct, "MIN_CONTOUR_CELLS", 2000)
    assert write_rtstruct(tmp_path / "one.dcm", labels[:1], one, CARD, min_contour_area=0) is None

    noise = (np.random.default_rng(0).random(volume.array.shape) < 0.5).astype(np.uint8)
    assert "too ragged" in write_rtstruct(tmp_path / "noise.dcm", noise, volume, CARD, min_contour_area=0)
    steps = sum(int(contour.NumberOfContourPoints) for contour in
                pydicom.dcmread(tmp_path / "noise.dcm").ROIContourSequence[0].ContourSequence)
    assert 0 < steps <= 2000
    assert_valid_dicom(tmp_path / "noise.dcm")
