"""Inputs that would give a wrong result are refused in one line, and every command keeps errors to one line:
no raw ITK/numpy warning, no traceback (unless --debug, which then shows the cause)."""
from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from dicom_files import dicom_series
from shared_files import EXAMPLE_CT
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.errors import SwinsegError
from swinseg.io import read_volume, write_volume


@pytest.fixture(scope="module")
def ct_slab() -> np.ndarray:
    """10 slices of the real CT (or of a random volume where ../shared is absent), int16 HU."""
    if EXAMPLE_CT.exists():
        return sitk.GetArrayFromImage(sitk.ReadImage(str(EXAMPLE_CT)))[50:60].astype(np.int16)
    return np.random.default_rng(0).integers(-1000, 1000, (10, 32, 32)).astype(np.int16)


def test_a_complete_series_reads_with_its_spacing(tmp_path, ct_slab):
    dicom_series(tmp_path / "ok", ct_slab)
    volume = read_volume(tmp_path / "ok")
    assert np.array_equal(volume.array, ct_slab)
    np.testing.assert_allclose(volume.spacing[0], 2.0, rtol=1e-6)


def test_a_missing_slice_is_a_gap_error(tmp_path, ct_slab):
    files = dicom_series(tmp_path / "gap", ct_slab)
    files[4].unlink()
    with pytest.raises(SwinsegError, match=r"gap in DICOM series .*4\.00 mm apart, 2\.00 mm elsewhere, 1 slice"):
        read_volume(tmp_path / "gap")


def test_a_truncated_slice_is_named(tmp_path, ct_slab):
    files = dicom_series(tmp_path / "trunc", ct_slab)
    files[5].write_bytes(files[5].read_bytes()[:-300])
    with pytest.raises(SwinsegError, match=r"slice_005\.dcm: unreadable DICOM file"):
        read_volume(tmp_path / "trunc")


def test_gantry_tilt_duplicates_and_mixed_sizes_are_refused(tmp_path, ct_slab):
    dicom_series(tmp_path / "tilt", ct_slab, tilt_mm=0.5)  # atan(0.5 / 2) = 14 degrees
    with pytest.raises(SwinsegError, match=r"gantry tilt of 14\.0 degrees"):
        read_volume(tmp_path / "tilt")
    files = dicom_series(tmp_path / "dup", ct_slab)
    shutil.copy(files[3], files[3].with_name("copy.dcm"))
    with pytest.raises(SwinsegError, match="several slices at one position"):
        read_volume(tmp_path / "dup")
    files = dicom_series(tmp_path / "mixed", ct_slab)
    dicom_series(tmp_path / "small", ct_slab[:, :16, :16])
    shutil.copy(tmp_path / "small" / "slice_009.dcm", files[0].with_name("slice_010.dcm"))
    with pytest.raises(SwinsegError, match="mixes slice sizes"):
        read_volume(tmp_path / "mixed")


def test_complex_and_singular_nifti_are_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.complex64), np.eye(4)), tmp_path / "complex.nii.gz")
    with pytest.raises(SwinsegError, match=r"complex\.nii\.gz: complex-valued image"):
        read_volume(tmp_path / "complex.nii.gz")
    affine = np.eye(4)
    affine[:3, 1] = affine[:3, 0]  # the y voxel axis points along x
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), affine), tmp_path / "singular.nii.gz")
    with pytest.raises(SwinsegError, match=r"singular\.nii\.gz: singular affine"):
        read_volume(tmp_path / "singular.nii.gz")


def test_write_errors_name_the_requested_output(tmp_path):
    volume = read_volume_like(tmp_path)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(SwinsegError, match=r"a_file/sub/mask\.nii\.gz: cannot create its folder"):
        write_volume(tmp_path / "a_file" / "sub" / "mask.nii.gz", volume.array, volume)
    for suffix in (".nii.gz", ".nrrd"):  # nibabel and SimpleITK writers
        with pytest.raises(SwinsegError) as raised:
            write_volume(Path("/proc") / f"mask{suffix}", volume.array, volume)
        assert f"/proc/mask{suffix}: cannot write" in str(raised.value)
        assert ".tmp-" not in str(raised.value) and "0x" not in str(raised.value)


def read_volume_like(tmp_path: Path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.uint8), np.eye(4)), tmp_path / "like.nii.gz")
    return read_volume(tmp_path / "like.nii.gz")


# ------------------------------------------------------------------------- every command: one line per error


def command_lines(tmp: Path, checkpoint: Path) -> dict[str, list[str]]:
    empty = tmp / "empty"
    empty.mkdir(exist_ok=True)
    missing = str(tmp / "missing.nii.gz")
    gap = tmp / "gap"
    files = dicom_series(gap, np.random.default_rng(1).integers(-500, 500, (6, 32, 32)).astype(np.int16))
    files[2].unlink()
    ckpt, out = str(checkpoint), str(tmp / "out")
    return {
        "predict empty folder": ["predict", str(empty), "-c", ckpt, "-o", out],
        "predict missing file": ["predict", missing, "-c", ckpt, "-o", str(tmp / "m.nii.gz")],
        "predict DICOM gap": ["predict", str(gap), "-c", ckpt, "-o", str(tmp / "m.nii.gz")],
        "train empty folder": ["train", "--data", str(empty), "--model", "swin_unet_test", "-o", out],
        "finetune missing checkpoint": ["finetune", "--data", str(empty), "--checkpoint", missing, "-o", out],
        "preprocess empty folder": ["preprocess", str(empty), "-o", out],
        "evaluate empty folders": ["evaluate", str(empty), str(empty), "-o", out],
        "overlay missing scan": ["overlay", missing, missing, "-o", str(tmp / "o.png")],
        "weights missing file": ["weights", "info", missing],
    }


COMMANDS = ["predict empty folder", "predict missing file", "predict DICOM gap", "train empty folder",
            "finetune missing checkpoint", "preprocess empty folder", "evaluate empty folders",
            "overlay missing scan", "weights missing file"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_reports_an_error_in_one_line(name, tmp_path, checkpoint, capfd):
    args = command_lines(tmp_path, checkpoint)[name]
    result = CliRunner().invoke(app, args)
    captured = capfd.readouterr()  # what C++ libraries (ITK) write to the process's own stderr
    assert result.exit_code not in (0, None), result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "failed:"))]
    assert len(errors) == 1, result.stderr
    assert "WARNING" not in captured.err + result.stderr, captured.err
    assert all(line in errors or line.startswith(("warning:", "swin_unet", "0 of", "1 case")) for line in lines), lines


def test_debug_shows_the_cause_of_a_failed_case(tmp_path, checkpoint):
    result = CliRunner().invoke(app, ["--debug", "predict", str(tmp_path / "missing.nii.gz"), "-c", str(checkpoint),
                                      "-o", str(tmp_path / "m.nii.gz")])
    assert result.exit_code != 0
    assert "Traceback" in result.stderr and "file not found" in result.stderr


def test_nested_series_folders_are_found(tmp_path, ct_slab):
    from swinseg.io import find_images

    dicom_series(tmp_path / "patient1" / "study" / "ct_venous", ct_slab[:3], uid="1.2.826.0.1.3680043.2.1125.31")
    dicom_series(tmp_path / "patient2" / "ct", ct_slab[:4], uid="1.2.826.0.1.3680043.2.1125.32")
    (tmp_path / "notes").mkdir()
    found = find_images(tmp_path)
    assert found == [tmp_path / "patient1" / "study" / "ct_venous", tmp_path / "patient2" / "ct"]
    assert [read_volume(path).array.shape[0] for path in found] == [3, 4]


def test_nifti_whose_qform_and_sform_disagree_is_refused(tmp_path):
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-100.0, 50.0, 20.0)
    image = nib.Nifti1Image(np.zeros((6, 5, 3), np.int16), affine)
    image.set_qform(affine, code=1)
    shifted = affine.copy()
    shifted[0, 3] += 4.0  # sform says 4 mm further right
    image.set_sform(shifted, code=2)
    nib.save(image, tmp_path / "disagree.nii.gz")
    with pytest.raises(SwinsegError, match=r"disagree\.nii\.gz: the NIfTI qform \(code 1\) and sform \(code 2\) "
                                           r"disagree by up to 4 mm"):
        read_volume(tmp_path / "disagree.nii.gz")
    image.set_sform(affine, code=2)  # both set and agreeing: read, and exactly where ITK puts it
    nib.save(image, tmp_path / "agree.nii.gz")
    volume, itk_image = read_volume(tmp_path / "agree.nii.gz"), sitk.ReadImage(str(tmp_path / "agree.nii.gz"))
    np.testing.assert_allclose(volume.origin, itk_image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(volume.direction, itk_image.GetDirection(), atol=1e-6)


def test_allow_gaps_interpolates_the_missing_slice_and_says_so(tmp_path, ct_slab, checkpoint):
    files = dicom_series(tmp_path / "gap", ct_slab, spacing=2.0)
    files[4].unlink()
    with pytest.raises(SwinsegError, match="--allow-gaps interpolates them"):
        read_volume(tmp_path / "gap")
    volume = read_volume(tmp_path / "gap", allow_gaps=True)
    assert volume.array.shape == ct_slab.shape and volume.spacing[0] == pytest.approx(2.0)
    kept = [k for k in range(len(ct_slab)) if k != 4]
    np.testing.assert_array_equal(volume.array[kept], ct_slab[kept])  # real slices untouched
    expected = np.rint((ct_slab[3].astype(np.float32) + ct_slab[5]) / 2).astype(np.int16)
    np.testing.assert_array_equal(volume.array[4], expected)  # the missing one: midway between its neighbours
    np.testing.assert_allclose(volume.origin, (-10.0, 20.0, 0.0), atol=1e-6)
    assert "1 missing slice(s)" in volume.notes[0] and not volume.source_files
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "gap"), "-c", str(checkpoint), "-o",
                                      str(tmp_path / "m.nii.gz"), "--allow-gaps"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "interpolated (--allow-gaps)" in result.stderr
    assert nib.load(tmp_path / "m.nii.gz").shape == (ct_slab.shape[2], ct_slab.shape[1], ct_slab.shape[0])


def test_review_regressions(tmp_path, ct_slab):
    """Valid inputs that the checks must not refuse, and naming of nested series."""
    from swinseg.labels import parse_labels
    from swinseg.runner import plan_cases

    # oblique images written by SimpleITK: qform and sform agree up to float32 quaternion rounding
    rng = np.random.default_rng(0)
    for trial in range(10):
        image = sitk.GetImageFromArray(np.zeros((20, 64, 64), np.int16))
        image.SetSpacing((0.7, 0.7, 1.5))
        rotation = sitk.VersorTransform((*rng.normal(size=3), float(rng.uniform(0, np.pi))))
        flip = np.diag([-1.0, -1.0, 1.0])
        image.SetDirection((flip @ np.asarray(rotation.GetMatrix()).reshape(3, 3)).ravel().tolist())
        sitk.WriteImage(image, str(tmp_path / f"oblique{trial}.nii.gz"))
        read_volume(tmp_path / f"oblique{trial}.nii.gz")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 9), np.uint8)), str(tmp_path / "flat.nii.gz"))
    assert read_volume(tmp_path / "flat.nii.gz").array.shape[-2:] == (8, 9)  # 2-D NIfTI, both codes set
    # a non-image DICOM file (here: a copy of a slice's header without pixel data, as an SR would be) is left alone
    files = dicom_series(tmp_path / "with_report", ct_slab)
    header = files[0].read_bytes()
    (tmp_path / "with_report" / "report.dcm").write_bytes(header[: header.index(b"\xe0\x7f\x10\x00")][:-1])
    assert read_volume(tmp_path / "with_report").array.shape == ct_slab.shape
    with pytest.raises(SwinsegError, match="given twice"):
        parse_labels("spleen,1")
    # PA/ST/SE trees: nested series named by their path; outputs inside the input tree are not read back
    dicom_series(tmp_path / "tree" / "P1" / "ST0" / "SE0", ct_slab[:3], uid="1.2.826.0.1.3680043.2.1125.41")
    dicom_series(tmp_path / "tree" / "P2" / "ST0" / "SE0", ct_slab[:3], uid="1.2.826.0.1.3680043.2.1125.42")
    (tmp_path / "tree" / "seg").mkdir()
    dicom_series(tmp_path / "tree" / "seg" / "old", ct_slab[:2], uid="1.2.826.0.1.3680043.2.1125.43")
    cases = plan_cases([tmp_path / "tree"], tmp_path / "tree" / "seg", output_type="dicom-seg")
    assert [case.output.name for case in cases] == ["P1_ST0_SE0.dcm", "P2_ST0_SE0.dcm"]
