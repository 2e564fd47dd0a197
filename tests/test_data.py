"""Datasets of both layouts, pair checks, the reference augmentation, and `swinseg preprocess`."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.config import Preprocessing, load_card
from swinseg.errors import SwinsegError
from swinseg.training.augment import augment_slice, resize_pair, rotate_nearest
from swinseg.training.convert import preprocess_dataset
from swinseg.training.data import open_training_data
from swinseg.training.datasets import open_nnunet, read_dataset_json, split_cases
from swinseg.training.samples import LoadedCase

PREP = Preprocessing()  # CT window [-125, 275], LPS
CLASSES = ["background", "liver", "spleen"]
XYZ_SHAPE = (20, 24, 6)  # nibabel order; arrays are (z, y, x) = (6, 24, 20)
RAS_AFFINE = np.diag([1.5, 1.5, 3.0, 1.0])  # x -> right, y -> anterior: LPS needs both flipped


def reference_augment(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, size: int):
    """The reference RandomGenerator, written with scipy as the reference code does (same draws)."""
    if rng.random() > 0.5:
        k = rng.integers(0, 4)
        image, label = np.rot90(image, k), np.rot90(label, k)
        axis = rng.integers(0, 2)
        image, label = np.flip(image, axis=axis).copy(), np.flip(label, axis=axis).copy()
    elif rng.random() > 0.5:
        angle = rng.integers(-20, 20)
        image = scipy.ndimage.rotate(image, angle, order=0, reshape=False)
        label = scipy.ndimage.rotate(label, angle, order=0, reshape=False)
    x, y = image.shape
    image = scipy.ndimage.zoom(image, (size / x, size / y), order=3)
    label = scipy.ndimage.zoom(label, (size / x, size / y), order=0)
    return image, label


def write_case(folder: Path, name: str, seed: int, *, label_shape=XYZ_SHAPE, label_affine=RAS_AFFINE,
               max_label: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hu = rng.integers(-400, 500, size=XYZ_SHAPE).astype(np.int16)
    label = rng.integers(0, max_label + 1, size=label_shape).astype(np.uint8)
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(hu, RAS_AFFINE), folder / "imagesTr" / f"{name}_0000.nii.gz")
    nib.save(nib.Nifti1Image(label, label_affine), folder / "labelsTr" / f"{name}.nii.gz")
    return hu, label


def write_dataset(folder: Path, n_cases: int = 3) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    cases = {f"abd_{i:03d}": write_case(folder, f"abd_{i:03d}", seed=i) for i in range(n_cases)}
    (folder / "dataset.json").write_text(json.dumps({"labels": {c: i for i, c in enumerate(CLASSES)}}))
    return cases


def lps_array(xyz: np.ndarray) -> np.ndarray:
    """(z, y, x) array of a RAS_AFFINE volume as LPS: both in-plane axes reversed."""
    return xyz.T[:, ::-1, ::-1]


# ------------------------------------------------------------------------------------------ augmentation


@pytest.mark.parametrize("seed", range(8))
def test_augmentation_equals_reference(seed: int) -> None:
    data = np.random.default_rng(100 + seed)
    image = data.random((60, 52)).astype(np.float32)
    label = data.integers(0, 9, size=(60, 52)).astype(np.float32)
    expected_image, expected_label = reference_augment(image, label, np.random.default_rng(seed), 32)
    got_image, got_label = augment_slice(image, label, np.random.default_rng(seed))
    got_image, got_label = resize_pair(got_image, got_label, 32)
    np.testing.assert_allclose(got_image, expected_image, atol=1e-5)
    np.testing.assert_array_equal(got_label, expected_label)


@pytest.mark.parametrize("angle", [-20, -3, 7, 19])
def test_rotate_nearest_equals_scipy(angle: int) -> None:
    image = np.random.default_rng(angle + 50).random((37, 50)).astype(np.float32)
    np.testing.assert_array_equal(rotate_nearest(image, angle),
                                  scipy.ndimage.rotate(image, angle, order=0, reshape=False))


def test_augmentation_draws_all_branches() -> None:
    image = np.arange(16 * 16, dtype=np.float32).reshape(16, 16)
    outcomes = {"same": 0, "rot_flip": 0, "rotate": 0}
    for seed in range(200):
        got, _ = augment_slice(image, image, np.random.default_rng(seed))
        if np.array_equal(got, image):
            outcomes["same"] += 1
        elif sorted(got.ravel().tolist()) == image.ravel().tolist():
            outcomes["rot_flip"] += 1  # a permutation of the pixels
        else:
            outcomes["rotate"] += 1
    # expected 25% unchanged, 50% rot90 + flip (a permutation of the pixels), 25% rotated by an angle
    assert 30 <= outcomes["same"] <= 70 and 70 <= outcomes["rot_flip"] <= 130 and 30 <= outcomes["rotate"] <= 70


# ------------------------------------------------------------------------------------------------ Synapse


def write_synapse(root: Path, lists_at: str = "lists/lists_Synapse") -> None:
    rng = np.random.default_rng(0)
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    for case in ("case0005", "case0006"):
        for z in range(2):
            np.savez(root / "train_npz" / f"{case}_slice{z:03d}.npz", image=rng.random((40, 40)).astype(np.float32),
                     label=rng.integers(0, 9, (40, 40)).astype(np.float32))
    with h5py.File(root / "test_vol_h5" / "case0008.npy.h5", "w") as data:
        data["image"] = rng.random((3, 40, 40)).astype(np.float32)
        data["label"] = rng.integers(0, 9, (3, 40, 40)).astype(np.float32)
    lists = root / lists_at
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("case0005_slice000\ncase0005_slice001\ncase0006_slice001\n")
    (lists / "test_vol.txt").write_text("case0008\n")


def test_synapse_layout_slices_and_volumes(tmp_path: Path) -> None:
    write_synapse(tmp_path / "Synapse")
    data = open_training_data(tmp_path / "Synapse", img_size=32, preprocessing=PREP, augment="none")
    assert data.layout == "synapse" and len(data.slices) == 3  # the list, not every file
    assert data.train_cases == ["case0005", "case0006"] and data.validation_cases == ["case0008"]
    sample = data.slices[2]
    assert sample["name"] == "case0006_slice001"
    assert tuple(sample["image"].shape) == (1, 32, 32) and tuple(sample["label"].shape) == (32, 32)
    with np.load(tmp_path / "Synapse" / "train_npz" / "case0006_slice001.npz") as raw:
        expected = scipy.ndimage.zoom(raw["image"], 32 / 40, order=3)
        expected_label = scipy.ndimage.zoom(raw["label"], 32 / 40, order=0)
    np.testing.assert_allclose(sample["image"][0].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(sample["label"].numpy(), expected_label)
    volume = data.volumes[0]
    assert volume.name == "case0008" and volume.prepared.slices.shape == (3, 40, 40) and volume.label.dtype == np.uint8
    assert volume.prepared.spacing is None  # Synapse h5 files without a spacing attribute


def test_synapse_missing_listed_files_are_named(tmp_path: Path) -> None:
    write_synapse(tmp_path / "Synapse", lists_at="lists_Synapse")
    (tmp_path / "Synapse" / "train_npz" / "case0005_slice001.npz").unlink()
    (tmp_path / "Synapse" / "test_vol_h5" / "case0008.npy.h5").unlink()
    with pytest.raises(SwinsegError, match="2 listed files missing.*case0005_slice001.npz.*case0008.npy.h5"):
        open_training_data(tmp_path / "Synapse", img_size=32, preprocessing=PREP)


def test_slice_dataset_is_reproducible_per_seed_epoch_index(tmp_path: Path) -> None:
    write_synapse(tmp_path / "Synapse")
    data = open_training_data(tmp_path / "Synapse", img_size=32, preprocessing=PREP, seed=7)
    first = [data.slices[i]["image"] for i in range(3)]
    again = [data.slices[i]["image"] for i in range(3)]
    assert all((a == b).all() for a, b in zip(first, again))
    changed = []
    for epoch in range(1, 6):
        data.slices.set_epoch(epoch)
        changed.append(any(not (data.slices[i]["image"] == first[i]).all() for i in range(3)))
    assert any(changed)


def test_loader_workers_give_the_same_batches(tmp_path: Path) -> None:
    import torch

    write_synapse(tmp_path / "Synapse")
    data = open_training_data(tmp_path / "Synapse", img_size=32, preprocessing=PREP, seed=3)
    data.slices.set_epoch(2)
    batches = [torch.cat([b["image"] for b in torch.utils.data.DataLoader(data.slices, batch_size=2,
                                                                         num_workers=workers)])
               for workers in (0, 2)]
    assert torch.equal(batches[0], batches[1])


def test_one_persistent_loader_draws_each_epoch_as_a_fresh_loader_would(tmp_path: Path) -> None:
    import torch

    from swinseg.training.samples import EpochSampler

    write_synapse(tmp_path / "Synapse")
    data = open_training_data(tmp_path / "Synapse", img_size=32, preprocessing=PREP, seed=3)
    sampler = EpochSampler(data.slices, num_replicas=1, rank=0, shuffle=True, seed=3)
    loader = torch.utils.data.DataLoader(data.slices, batch_size=2, sampler=sampler, num_workers=2,
                                         persistent_workers=True)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        persistent = torch.cat([batch["image"] for batch in loader])
        plain = torch.utils.data.DistributedSampler(data.slices, 1, 0, shuffle=True, seed=3)
        plain.set_epoch(epoch)
        fresh = torch.stack([torch.as_tensor(data.slices.sample(i, epoch)[0]).unsqueeze(0) for i in plain])
        assert torch.equal(persistent, fresh)  # same order, same augmentation of (seed, epoch, index)


# ------------------------------------------------------------------------------------------------ nnU-Net


def test_nnunet_layout_oriented_normalised_slices_and_volumes(tmp_path: Path) -> None:
    cases = write_dataset(tmp_path / "ds")
    data = open_training_data(tmp_path / "ds", img_size=24, preprocessing=PREP, augment="none",
                              validation_cases=["abd_001"])
    assert data.layout == "nnunet" and data.classes == tuple(CLASSES)
    assert data.train_cases == ["abd_000", "abd_002"] and len(data.slices) == 12  # 2 cases x 6 slices
    hu, label = cases["abd_002"]
    image, got_label = data.slices.sample(6 + 4)  # case abd_002, slice 4 (24 x 20 -> 24 x 24)
    expected = np.clip((lps_array(hu)[4].astype(np.float32) + 125) / 400, 0, 1)
    np.testing.assert_allclose(image, scipy.ndimage.zoom(expected, (1, 24 / 20), order=3), atol=1e-5)
    np.testing.assert_array_equal(got_label, scipy.ndimage.zoom(lps_array(label)[4], (1, 24 / 20), order=0))
    volume = data.volumes[0]
    hu, label = cases["abd_001"]
    assert volume.name == "abd_001" and volume.prepared.spacing == (1.5, 1.5)
    np.testing.assert_allclose(volume.prepared.normalized(), np.clip((lps_array(hu) + 125.0) / 400, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(volume.label, lps_array(label))


def test_nnunet_case_axes_permuted_and_scaled_intensities(tmp_path: Path) -> None:
    """A volume stored with its index axes permuted (x index runs superior, z index left) and CT stored as
    scaled floats: slices come out axial in LPS, spacing follows, memory holds int16."""
    from swinseg.training.cases import load_case
    from swinseg.training.datasets import CaseFiles

    affine = np.array([[0, 0, -2.0, 0], [0, -1.5, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])  # RAS
    hu = np.random.default_rng(0).integers(-1000, 1000, size=(5, 7, 9)).astype(np.int16)  # (x, y, z) on disk
    image = nib.Nifti1Image(hu, affine)
    image.header.set_slope_inter(1.0, -0.0)
    image.set_data_dtype(np.float64)
    nib.save(image, tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image((hu > 0).astype(np.uint8), affine), tmp_path / "lab.nii.gz")
    case = load_case(CaseFiles("c", tmp_path / "img.nii.gz", tmp_path / "lab.nii.gz"), PREP, 2)
    # LPS array axes (z: S, y: P, x: L) <- disk axes (x: S, y: P, z: L)
    assert case.image.shape == (5, 7, 9) and case.spacing == (3.0, 1.5, 2.0)
    assert case.image.dtype == np.int16 and case.image.flags.c_contiguous
    np.testing.assert_array_equal(case.image, hu)
    np.testing.assert_array_equal(case.label, hu > 0)


def test_nnunet_pair_problems_reported_by_name_before_training(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_dataset(root, n_cases=2)
    write_case(root, "bad_shape", 5, label_shape=(20, 24, 5))
    write_case(root, "bad_geometry", 6, label_affine=np.diag([1.5, 1.5, 2.0, 1.0]))
    write_case(root, "bad_label", 7, max_label=4)
    with pytest.raises(SwinsegError) as caught:
        open_training_data(root, img_size=24, preprocessing=PREP, validation_fraction=0.2)
    message = str(caught.value)
    assert "3 bad cases" in message
    for expected in ("bad_shape_0000.nii.gz", "shapes differ", "bad_geometry", "spacing", "bad_label.nii.gz",
                     "label 4"):
        assert expected in message
    (root / "labelsTr" / "abd_000.nii.gz").unlink()
    (root / "imagesTr" / "abd_001_0000.nii.gz").unlink()
    with pytest.raises(SwinsegError, match="2 unpaired files: abd_000_0000.nii.gz has no label.*labelsTr/abd_001"):
        open_nnunet(root)


def test_msd_names_without_channel_suffix(tmp_path: Path) -> None:
    """MSD names images like their labels (liver_3.nii.gz), even when the name ends in four digits."""
    root = tmp_path / "Task03_Liver"
    write_dataset(root, n_cases=1)
    for name in ("liver_3", "case_0007"):
        write_case(root, name, 1)
        (root / "imagesTr" / f"{name}_0000.nii.gz").rename(root / "imagesTr" / f"{name}.nii.gz")
    (root / "imagesTr" / "._liver_3.nii.gz").write_bytes(b"macOS resource fork")
    dataset = open_nnunet(root)
    assert dataset.names == ["abd_000", "case_0007", "liver_3"] and dataset.extra_channels == []
    # a second modality is reported (and ignored): Swin-Unet takes one channel
    shutil.copy(root / "imagesTr" / "abd_000_0000.nii.gz", root / "imagesTr" / "abd_000_0001.nii.gz")
    assert open_nnunet(root).extra_channels == ["abd_000"]


def test_dataset_json_forms(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "tumour"}}))  # MSD
    assert read_dataset_json(path) == ("background", "liver", "tumour")
    path.write_text(json.dumps({"labels": {"background": 0, "tumour": 2, "liver": 1}}))  # nnU-Net v2
    assert read_dataset_json(path) == ("background", "liver", "tumour")
    path.write_text(json.dumps({"labels": {"background": 0, "liver": 2}}))
    with pytest.raises(SwinsegError, match="without gaps"):
        read_dataset_json(path)


def test_split_is_seeded_and_accepts_given_cases() -> None:
    names = [f"c{i}" for i in range(10)]
    train, test = split_cases(names, test_fraction=0.3, seed=1)
    assert len(test) == 3 and sorted(train + test) == sorted(names)
    assert split_cases(names, test_fraction=0.3, seed=1) == (train, test)
    assert split_cases(names, test_fraction=0.3, seed=2) != (train, test)
    assert split_cases(names, test_cases=["c4", "c1"])[1] == ["c1", "c4"]
    with pytest.raises(SwinsegError, match="unknown cases c99"):
        split_cases(names, test_cases=["c99"])


# --------------------------------------------------------------------------------------------- preprocess


def test_preprocess_writes_synapse_layout_equal_to_direct_reading(tmp_path: Path) -> None:
    cases = write_dataset(tmp_path / "ds")
    card = load_card("swin_unet_test")
    report = preprocess_dataset(tmp_path / "ds", tmp_path / "out", card, test_cases=["abd_001"])
    out = tmp_path / "out"
    assert report.train_cases == ["abd_000", "abd_002"] and report.train_slices == 12
    train_list = (out / "lists_Synapse" / "train.txt").read_text().split()
    assert train_list[0] == "abd_000_slice000" and len(train_list) == 12
    assert (out / "lists_Synapse" / "test_vol.txt").read_text().split() == ["abd_001"]
    assert read_dataset_json(out / "dataset.json") == tuple(CLASSES)
    with np.load(out / "train_npz" / "abd_002_slice003.npz") as data:
        assert data["image"].dtype == np.float32 and data["label"].dtype == np.uint8
        np.testing.assert_allclose(data["image"], np.clip((lps_array(cases["abd_002"][0])[3] + 125.0) / 400, 0, 1))
    # the converted folder trains exactly like the original one
    direct = open_training_data(tmp_path / "ds", img_size=24, preprocessing=PREP, augment="none",
                                validation_cases=["abd_001"])
    converted = open_training_data(out, img_size=24, preprocessing=PREP, augment="none")
    assert converted.classes == tuple(CLASSES) and converted.validation_cases == ["abd_001"]
    for index in (0, 7, 11):
        np.testing.assert_array_equal(direct.slices[index]["image"], converted.slices[index]["image"])
        np.testing.assert_array_equal(direct.slices[index]["label"], converted.slices[index]["label"])
    np.testing.assert_array_equal(direct.volumes[0].prepared.normalized(), converted.volumes[0].prepared.normalized())
    assert converted.volumes[0].prepared.spacing == (1.5, 1.5)
    # a rerun keeps finished cases; no temporary files are left behind
    again = preprocess_dataset(tmp_path / "ds", out, card, test_cases=["abd_001"])
    assert again.skipped == ["abd_000", "abd_002", "abd_001"]
    assert not [p for p in out.rglob(".*tmp*")]


def test_preprocess_cli(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ds", n_cases=3)
    result = CliRunner().invoke(app, ["preprocess", str(tmp_path / "ds"), "-o", str(tmp_path / "out"),
                                      "--model", "swin_unet_test", "--test-fraction", "0.34", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert "2 training cases (12 slices), 1 test volumes" in result.output
    assert len(list((tmp_path / "out" / "test_vol_h5").glob("*.npy.h5"))) == 1
    bad = CliRunner().invoke(app, ["preprocess", str(tmp_path / "ds"), "-o", str(tmp_path / "o2"),
                                   "--test-cases", "nope"])
    assert bad.exit_code == 1 and "unknown cases nope" in bad.output
    both = CliRunner().invoke(app, ["preprocess", str(tmp_path / "ds"), "-o", str(tmp_path / "o2"),
                                    "--test-cases", "abd_000", "--test-fraction", "0.5"])
    assert both.exit_code == 1 and "exclude each other" in both.output
    not_nnunet = CliRunner().invoke(app, ["preprocess", str(tmp_path / "out"), "-o", str(tmp_path / "o3")])
    assert not_nnunet.exit_code == 1 and "no imagesTr" in not_nnunet.output


def test_datasets_larger_than_memory_are_refused_before_loading(tmp_path, monkeypatch):
    import swinseg.training.cases as cases_module
    from swinseg.phantom import write_phantom_dataset

    root = write_phantom_dataset(tmp_path / "ds", 2, seed=0, shape=(4, 32, 32))
    dataset = open_nnunet(root)
    names = [case.name for case in dataset.cases]
    cases_module.check_fits_in_memory(dataset, names)  # 2 x 4096 voxels fit
    monkeypatch.setattr(cases_module, "_available_memory", lambda: 10_000)
    with pytest.raises(SwinsegError, match="swinseg preprocess"):
        cases_module.check_fits_in_memory(dataset, names)


def test_a_target_grid_larger_than_memory_is_refused(monkeypatch):
    import swinseg.training.cases as cases_module

    case = LoadedCase("c", np.zeros((10, 100, 100), np.int16), np.zeros((10, 100, 100), np.uint8), (3.0, 3.0, 3.0))
    monkeypatch.setattr(cases_module, "_available_memory", lambda: 10_000_000)
    cases_module.check_grid_fits_in_memory(Path("ds"), [case], (3.0, 3.0))  # 300 kB fit
    with pytest.raises(SwinsegError, match="resampled to 0.5x0.5 mm .* choose a coarser --spacing"):
        cases_module.check_grid_fits_in_memory(Path("ds"), [case], (0.5, 0.5))  # 36x the voxels: 10.8 MB
