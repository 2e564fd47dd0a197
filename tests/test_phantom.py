"""Synthetic CT phantoms: determinism, anatomy, HU values, the nnU-Net dataset on disk and `swinseg demo-data`."""
import json

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.config import load_card
from swinseg.errors import SwinsegError
from swinseg.io import read_volume
from swinseg.phantom import (
    AORTA,
    CLASSES,
    KIDNEY_LEFT,
    KIDNEY_RIGHT,
    LIVER,
    SPLEEN,
    case_seed,
    make_phantom,
    write_phantom_dataset,
)

SMALL = (16, 48, 48)
SMALL_SPACING = (15.0, 7.33, 7.33)  # with SMALL, about the default field of view (240 x 352 x 352 mm)


def _volumes_ml(labels, spacing):
    """Each organ's volume in ml (voxel count x voxel volume), in label order 1..5."""
    return np.bincount(labels.ravel(), minlength=6)[1:] * float(np.prod(spacing)) / 1000.0


@pytest.fixture(scope="module")
def phantoms():
    """Three cases at the default size (48 x 160 x 160, 5 x 2.2 x 2.2 mm)."""
    return [make_phantom(seed) for seed in (0, 1, 2)]


def test_labels_are_the_demo_card_classes():
    assert CLASSES == load_card("swin_unet_demo").classes == load_card("swin_unet_test").classes


def test_same_seed_same_phantom_other_seed_other_anatomy():
    ct_a, labels_a = make_phantom(11, SMALL, SMALL_SPACING)
    ct_b, labels_b = make_phantom(11, SMALL, SMALL_SPACING)
    ct_c, labels_c = make_phantom(12, SMALL, SMALL_SPACING)
    assert ct_a.dtype == np.int16 and labels_a.dtype == np.uint8 and ct_a.shape == labels_a.shape == SMALL
    np.testing.assert_array_equal(ct_a, ct_b)
    np.testing.assert_array_equal(labels_a, labels_b)
    volumes_a = np.bincount(labels_a.ravel(), minlength=6)
    volumes_c = np.bincount(labels_c.ravel(), minlength=6)
    assert np.all(volumes_a[1:] != volumes_c[1:])  # every organ changes size
    assert np.mean(labels_a != labels_c) > 0.01


def test_every_organ_present_once_with_plausible_size_and_no_contact(phantoms):
    for _, labels in phantoms:
        percent = np.bincount(labels.ravel(), minlength=6)[1:] / labels.size * 100
        assert 3.0 < percent[LIVER - 1] < 9.0
        for organ in (SPLEEN, KIDNEY_LEFT, KIDNEY_RIGHT):
            assert 0.2 < percent[organ - 1] < 1.2
        assert 0.1 < percent[AORTA - 1] < 0.6
        assert percent[LIVER - 1] > 4 * max(percent[1:4])  # the liver is by far the largest organ
        for organ in range(1, 6):
            mask = labels == organ
            assert ndimage.label(mask)[1] == 1, f"{CLASSES[organ]} is not one piece"
            around = ndimage.binary_dilation(mask) & ~mask
            assert not np.any(np.isin(labels[around], [k for k in range(1, 6) if k != organ])), \
                f"{CLASSES[organ]} touches another organ"


def test_anatomy_in_lps_order(phantoms):
    """(z, y, x): z inferior -> superior, y anterior -> posterior, x the patient's right -> left."""
    for _, labels in phantoms:
        centre = {k: np.array(ndimage.center_of_mass(labels == k)) for k in range(1, 6)}
        middle_x = labels.shape[2] / 2
        assert centre[LIVER][2] < middle_x < centre[SPLEEN][2]  # liver on the patient's right (image left)
        assert centre[KIDNEY_RIGHT][2] < middle_x < centre[KIDNEY_LEFT][2]
        assert centre[AORTA][2] > middle_x  # aorta just left of the midline
        assert min(centre[KIDNEY_LEFT][1], centre[KIDNEY_RIGHT][1]) > centre[AORTA][1]  # kidneys posterior
        assert centre[LIVER][1] < centre[KIDNEY_RIGHT][1]
        assert centre[LIVER][0] > centre[KIDNEY_RIGHT][0]  # liver above the kidney
        assert np.all((labels == AORTA).any(axis=(1, 2)))  # the aorta runs through every slice


def _centre_mm(mask, spacing):
    """A mask's centre of mass in mm (z, y, x) from the volume's centre."""
    return (np.array(ndimage.center_of_mass(mask)) - (np.array(mask.shape) - 1) / 2) * spacing


def test_a_larger_field_of_view_adds_air_around_the_same_anatomy():
    """shape sets the field of view, not the body's size: grids whose voxel centres coincide (the extra size
    even on each side) hold the same labels where they overlap; the body ends in air; prisms and vessels
    continue above and below, the organs do not stretch."""
    ct, labels = make_phantom(11, SMALL, SMALL_SPACING)
    wide_ct, wide = make_phantom(11, (16, 72, 72), SMALL_SPACING)  # 1.5 x the field of view in-plane
    tall_ct, tall = make_phantom(11, (32, 72, 72), SMALL_SPACING)  # and 2 x along z
    _, narrow = make_phantom(11, (16, 24, 24), SMALL_SPACING)  # a cropped scan
    np.testing.assert_array_equal(wide[:, 12:60, 12:60], labels)
    np.testing.assert_array_equal(tall[8:24, 12:60, 12:60], labels)
    np.testing.assert_array_equal(labels[:, 12:36, 12:36], narrow)
    np.testing.assert_array_equal(_volumes_ml(wide, SMALL_SPACING), _volumes_ml(labels, SMALL_SPACING))
    margin = np.ones(wide.shape, dtype=bool)
    margin[:, 12:60, 12:60] = False
    assert not wide[margin].any() and wide_ct[margin].max() < -900  # air around the body
    for end in (tall[0], tall[-1]):  # 120 mm below and above the default volume: only the aorta continues
        assert set(np.unique(end)) == {0, AORTA}
    assert np.sum(tall == AORTA) > 1.5 * np.sum(labels == AORTA)
    np.testing.assert_array_equal(np.bincount(tall.ravel(), minlength=6)[1:5],
                                  np.bincount(labels.ravel(), minlength=6)[1:5])
    assert np.sum(tall_ct[:8] > 500) > 0 and np.sum(tall_ct[24:] > 500) > 0  # the spine continues too


def test_a_finer_spacing_samples_the_same_organs(phantoms):
    """spacing sets the sampling, not the anatomy: half the spacing in-plane or along z (the same field of
    view) gives the same organ volumes in ml, to a few percent of discretisation."""
    _, default = phantoms[0]
    expected = _volumes_ml(default, (5.0, 2.2, 2.2))
    for shape, spacing in (((48, 320, 320), (5.0, 1.1, 1.1)), ((96, 160, 160), (2.5, 2.2, 2.2))):
        _, labels = make_phantom(0, shape, spacing)
        np.testing.assert_allclose(_volumes_ml(labels, spacing), expected, rtol=0.04)
        assert _centre_mm(labels == LIVER, spacing) == pytest.approx(
            _centre_mm(default == LIVER, (5.0, 2.2, 2.2)), abs=1.0)  # the liver in the same place


def test_hounsfield_units_look_like_ct(phantoms):
    for ct, labels in phantoms:
        assert ct[0, 0, 0] < -900 and ct[-1, -1, -1] < -900  # air around the body
        assert 40 < np.median(ct[labels == LIVER]) < 80
        assert np.median(ct[labels == AORTA]) > 150 and np.median(ct[labels == KIDNEY_LEFT]) > 100
        assert np.sum(ct > 500) > 1000  # bone
        assert np.sum((ct > -130) & (ct < -70)) > 0.05 * ct.size  # fat
        assert np.sum(ct < -700) > 0.3 * ct.size
        noise = ct[labels == LIVER].std()
        assert 5 < noise < 40


def test_dataset_on_disk_is_nnunet_layout_with_real_headers(tmp_path):
    spacing = (4.0, 1.5, 1.25)
    out = write_phantom_dataset(tmp_path / "ds", 3, seed=5, shape=SMALL, spacing=spacing)
    dataset = json.loads((out / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "CT"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["numTraining"] == 3
    assert dataset["labels"] == {name: i for i, name in enumerate(CLASSES)}
    for i in range(3):
        image = read_volume(out / "imagesTr" / f"phantom_{i:03d}_0000.nii.gz")
        labels = read_volume(out / "labelsTr" / f"phantom_{i:03d}.nii.gz")
        np.testing.assert_allclose(image.spacing, spacing, rtol=1e-6)
        assert labels.origin == pytest.approx(image.origin) and image.origin[2] < -300  # a table position
        ct, expected = make_phantom(case_seed(5, i), SMALL, spacing)
        np.testing.assert_array_equal(image.array, ct)
        np.testing.assert_array_equal(labels.array, expected)
        assert image.array.dtype == np.int16 and labels.array.dtype == np.uint8
        nifti = nib.load(out / "labelsTr" / f"phantom_{i:03d}.nii.gz")
        assert nib.aff2axcodes(nifti.affine) == ("L", "P", "S")  # RAS affine of an LPS-aligned scan
        assert int(nifti.header["sform_code"]) > 0 and int(nifti.header["qform_code"]) > 0
    assert not list(out.rglob(".*"))  # no temporary files left
    write_phantom_dataset(out, 2, seed=5, shape=SMALL, spacing=spacing)
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    assert len(list((out / "imagesTr").iterdir())) == 2


def test_case_seeds_do_not_repeat_across_dataset_seeds():
    seeds = {case_seed(s, i) for s in range(5) for i in range(20)}
    assert len(seeds) == 100


def test_demo_data_command(tmp_path):
    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "d"), "--cases", "2", "--seed", "3",
                                      "--shape", "12", "40", "40"])
    assert result.exit_code == 0, result.output
    assert "wrote 2 phantom cases" in result.output
    assert read_volume(tmp_path / "d" / "imagesTr" / "phantom_001_0000.nii.gz").array.shape == (12, 40, 40)
    bad = CliRunner().invoke(app, ["demo-data", str(tmp_path / "e"), "--shape", "2", "40", "40"])
    assert bad.exit_code == 1 and "--shape" in bad.output and "Traceback" not in bad.output
    (tmp_path / "file").write_text("x")
    clash = CliRunner().invoke(app, ["demo-data", str(tmp_path / "file"), "--cases", "1"])
    assert clash.exit_code == 1 and "not a folder" in clash.output


def test_a_foreign_dataset_folder_is_never_overwritten(tmp_path):
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset.json").write_text('{"name": "my_study", "labels": {"background": 0}}')
    with pytest.raises(SwinsegError, match="not a phantom dataset"):
        write_phantom_dataset(tmp_path / "ds", 1, seed=0, shape=SMALL)
    assert "my_study" in (tmp_path / "ds" / "dataset.json").read_text()
