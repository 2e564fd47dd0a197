"""Series as anonymisers leave them: one de-identification option at a time (tests/dicom_files.py), each still
gives a DICOM SEG and an RTSTRUCT that dciodvfy passes and that read back (plastimatch) onto the mask; what
nothing recovers (no frame of reference, no study UID) is refused in one line."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicom_files import DEIDENTIFICATIONS, UNRECOVERABLE, deidentify, dicom_series
from dicom_judges import assert_valid_rtstruct, assert_valid_seg
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.config import load_card
from swinseg.dicom_seg import write_dicom_seg
from swinseg.errors import SwinsegError
from swinseg.io import read_volume, write_volume
from swinseg.rtstruct import write_rtstruct

CARD = load_card("swin_unet_test")
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


def scanner_header(header: pydicom.Dataset) -> None:
    """The attributes a scanner writes and de-identification touches, beyond what the test series has."""
    header.PatientBirthDate, header.PatientSex, header.StudyTime = "19600101", "F", "101500"
    header.SeriesDate = header.AcquisitionDate = header.ContentDate = "20261202"
    header.SeriesTime = header.AcquisitionTime = header.ContentTime = "101500"
    header.ReferringPhysicianName, header.SeriesNumber = "Doe^Jane", 3
    header.Manufacturer, header.InstitutionName, header.StationName = "Scanner Co", "Hospital", "CT1"
    header.add_new(0x00091010, "LO", "private")
    header.private_block(0x0009, "SCANNER CO", create=True).add_new(0x10, "LO", "private value")


def mask(shape: tuple[int, int, int]) -> np.ndarray:
    """A liver, a spleen and an aorta on every slice, large enough for a Dice of 0.98."""
    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    labels = np.zeros(shape, np.uint8)
    labels[((y - 14) / 10) ** 2 + ((x - 14) / 11) ** 2 <= 1] = 1
    labels[((y - 28) / 7) ** 2 + ((x - 36) / 8) ** 2 <= 1] = 2
    labels[:, 30:34, 14:18] = 5
    return labels


@pytest.fixture(scope="module")
def good_series(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("good") / "series"
    deidentify(dicom_series(folder, np.full((4, 40, 48), 40, np.int16), pixel_mm=1.5), scanner_header)
    return folder


def series_like(good: Path, folder: Path, *changes) -> Path:
    shutil.copytree(good, folder)
    deidentify(sorted(folder.iterdir()), *changes)
    return folder


@pytest.mark.parametrize("option", sorted(DEIDENTIFICATIONS))
def test_deidentified_series_gives_valid_seg_and_rtstruct(good_series, tmp_path, option):
    volume = read_volume(series_like(good_series, tmp_path / "series", DEIDENTIFICATIONS[option]))
    labels = mask(volume.array.shape)
    write_dicom_seg(tmp_path / "seg.dcm", labels, volume, CARD)
    assert_valid_seg(tmp_path / "seg.dcm")
    assert write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD) is None
    assert_valid_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD.classes, tmp_path / "judge")
    sources = [pydicom.dcmread(file, stop_before_pixels=True) for file in volume.source_files]
    uids = [source.SOPInstanceUID or source.file_meta.MediaStorageSOPInstanceUID for source in sources]
    rt = pydicom.dcmread(tmp_path / "rt.dcm")
    references = [item.ContourImageSequence[0] for roi in rt.ROIContourSequence
                  for item in roi.get("ContourSequence", [])]
    assert {ref.ReferencedSOPClassUID for ref in references} == {CT_IMAGE}
    assert {ref.ReferencedSOPInstanceUID for ref in references} == set(uids)
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True)
    np.testing.assert_array_equal(frames, labels)
    assert {item.ReferencedSOPClassUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} == {
        CT_IMAGE}


def test_all_options_at_once(good_series, tmp_path):
    volume = read_volume(series_like(good_series, tmp_path / "series", *DEIDENTIFICATIONS.values()))
    instances = {pydicom.dcmread(file, stop_before_pixels=True).SOPInstanceUID for file in volume.source_files}
    assert len(instances) == len(volume.source_files)
    labels = mask(volume.array.shape)
    write_dicom_seg(tmp_path / "seg.dcm", labels, volume, CARD)
    assert_valid_seg(tmp_path / "seg.dcm")
    write_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD)
    assert_valid_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD.classes, tmp_path / "judge")


def no_sop_class(header: pydicom.Dataset) -> None:
    header.SOPClassUID = header.file_meta.MediaStorageSOPClassUID = ""


def one_instance_uid(header: pydicom.Dataset) -> None:
    """Every slice given the same SOPInstanceUID (a broken anonymiser): no slice can be referenced."""
    header.SOPInstanceUID = header.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.2.1125.99"


@pytest.mark.parametrize(("change", "message"), [
    *((UNRECOVERABLE[option], rf"no {option.removesuffix('-removed')} \(removed by de-identification\?\); a SEG or "
       "RTSTRUCT must reference the source") for option in sorted(UNRECOVERABLE)),
    (no_sop_class, "no SOPClassUID, in the data set or the file meta"),
    (one_instance_uid, r"SOPInstanceUID 1\.2\.826\.0\.1\.3680043\.2\.1125\.99 also on \S+slice_\d+\.dcm; a SEG or "
                       "RTSTRUCT references each source image by it"),
], ids=[*sorted(UNRECOVERABLE), "sop-class-nowhere", "one-instance-uid"])
def test_what_nothing_recovers_is_refused_in_one_line(good_series, tmp_path, change, message):
    volume = read_volume(series_like(good_series, tmp_path / "series", change))
    labels = mask(volume.array.shape)
    for write in (write_dicom_seg, write_rtstruct):
        with pytest.raises(SwinsegError, match=rf"slice_\d+\.dcm: {message}") as error:
            write(tmp_path / "out.dcm", labels, volume, CARD)
        assert "\n" not in str(error.value)
        assert not (tmp_path / "out.dcm").exists()
    write_volume(tmp_path / "mask.nii.gz", labels, volume)
    for kind in ("seg", "rtstruct"):
        result = CliRunner().invoke(app, ["to-dicom", str(tmp_path / "mask.nii.gz"), "--series", str(volume.path),
                                          "-o", str(tmp_path / "out.dcm"), "--output-type", kind])
        assert result.exit_code == 1 and result.stderr.count("\n") == 1, result.output
        assert re.match(rf"error: \S+slice_\d+\.dcm: {message}", result.stderr), result.stderr


def test_predict_on_a_series_without_sop_class(good_series, tmp_path, checkpoint):
    """The issue's series: SOPClassUID empty, as some anonymisers leave it (highdicom failed with KeyError: '')."""
    series = series_like(good_series, tmp_path / "series", DEIDENTIFICATIONS["sop-class-empty"])
    volume = read_volume(series)
    for name, kind in (("seg.dcm", "dicom-seg"), ("rt.dcm", "rtstruct"), ("mask.nii.gz", "auto")):
        result = CliRunner().invoke(app, ["predict", str(series), "-c", str(checkpoint), "-o", str(tmp_path / name),
                                          "--output-type", kind, "--min-contour-area", "0"])
        assert result.exit_code == 0, result.output
    labels = read_volume(tmp_path / "mask.nii.gz").array
    assert_valid_seg(tmp_path / "seg.dcm")
    assert_valid_rtstruct(tmp_path / "rt.dcm", labels, volume, CARD.classes, tmp_path / "judge")


@pytest.mark.slow
def test_to_dicom_in_a_process_prints_no_library_warning(good_series, tmp_path):
    """A real process on a series with every option applied: stdout says what was written, stderr stays empty
    (no raw pydicom or highdicom message)."""
    import subprocess
    import sys

    volume = read_volume(series_like(good_series, tmp_path / "series", *DEIDENTIFICATIONS.values()))
    write_volume(tmp_path / "mask.nii.gz", mask(volume.array.shape), volume)
    for kind in ("seg", "rtstruct"):
        run = subprocess.run([sys.executable, "-m", "swinseg", "to-dicom", str(tmp_path / "mask.nii.gz"), "--series",
                              str(volume.path), "-o", str(tmp_path / f"{kind}.dcm"), "--output-type", kind, "--labels",
                              "liver,spleen,5=aorta"], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and run.stderr == "", run.stderr
        assert run.stdout.startswith(f"wrote {tmp_path / kind}.dcm")
