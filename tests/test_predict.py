"""swinseg.predict and swinseg.postprocess: batched inference, orientation round trip, reference protocol,
TTA, probabilities, post-processing, case planning and sharding, folder runs."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage
import SimpleITK as sitk
import torch
from geometry import as_sitk, transform_volume, undo_transform

from swinseg import io
from swinseg.config import load_card
from swinseg.device import rank_device, torchrun_rank
from swinseg.errors import SwinsegError
from swinseg.model import build_model
from swinseg.postprocess import keep_classes, keep_largest_component, parse_classes
from swinseg.predict import Predictor
from swinseg.runner import (
    Case,
    RunOptions,
    parse_shard,
    plan_cases,
    predict_cases,
    probabilities_path,
    shard_cases,
)


@pytest.fixture(scope="module")
def card():
    return load_card("swin_unet_test")


@pytest.fixture(scope="module")
def model(card):
    torch.manual_seed(0)
    return build_model(card.network).eval()


@pytest.fixture(scope="module")
def predictor(model, card):
    return Predictor(model, card, device="cpu", batch_size=4)


def ct_like(shape=(8, 40, 48), seed=0) -> np.ndarray:
    """Smooth HU-like blobs so that the network sees structure (int16)."""
    rng = np.random.default_rng(seed)
    field = scipy.ndimage.gaussian_filter(rng.normal(size=shape), sigma=(1, 4, 4))
    return (field / field.std() * 150 + 40).astype(np.int16)


def slices_like(shape=(8, 40, 48), seed=0) -> np.ndarray:
    return np.clip((ct_like(shape, seed).astype(np.float32) + 125) / 400, 0, 1)


# ------------------------------------------------------------------------------------------- predictor


def test_labels_use_several_classes_and_batch_size_does_not_change_them(model, card):
    slices = slices_like()
    results = [Predictor(model, card, device="cpu", batch_size=b).predict_slices(slices).labels for b in (1, 3, 8, 16)]
    assert results[0].dtype == np.uint8 and results[0].shape == slices.shape
    assert len(np.unique(results[0])) >= 3  # a test on a constant map would prove nothing
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])


def test_progress_counts_every_slice(predictor):
    done = []
    predictor.predict_slices(slices_like((7, 40, 48)), progress=done.append)
    assert sum(done) == 7 and len(done) == 2  # batches of 4


def reference_path(model, volume: np.ndarray, size: int) -> np.ndarray:
    """The published evaluation loop, written out with scipy.ndimage.zoom."""
    prediction = np.zeros(volume.shape, dtype=np.int64)
    for index in range(volume.shape[0]):
        image = volume[index]
        x, y = image.shape
        image = scipy.ndimage.zoom(image, (size / x, size / y), order=3)
        with torch.no_grad():
            logits = model(torch.from_numpy(image).unsqueeze(0).unsqueeze(0).float())
            out = torch.argmax(torch.softmax(logits, dim=1), dim=1).squeeze(0).numpy()
        prediction[index] = scipy.ndimage.zoom(out, (x / size, y / size), order=0)
    return prediction


@pytest.mark.parametrize("shape", [(4, 40, 48), (3, 100, 90)])
def test_reference_protocol_equals_the_published_loop(model, card, shape):
    slices = slices_like(shape, seed=1)
    ours = Predictor(model, card, device="cpu", protocol="reference").predict_slices(slices).labels
    expected = reference_path(model, slices, card.network.img_size)
    assert len(np.unique(expected)) >= 2
    np.testing.assert_array_equal(ours, expected)


def test_probabilities_sum_to_one_and_agree_with_labels(predictor):
    slices = slices_like()
    prediction = predictor.predict_slices(slices, probabilities=True)
    labels, probabilities = prediction.labels, prediction.probabilities
    assert probabilities.dtype == np.float16 and probabilities.shape == (6, *slices.shape)
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=5e-3)
    assert (probabilities.argmax(axis=0) == labels).mean() > 0.999  # float16 ties aside
    np.testing.assert_array_equal(labels, predictor.predict_slices(slices).labels)


def test_tta_is_flip_equivariant(model, card):
    """Averaging over the flip group makes the prediction commute with flips; a single pass does not."""
    slices = slices_like((3, 48, 48), seed=2)
    mirrored = slices[:, :, ::-1].copy()
    tta = Predictor(model, card, device="cpu", tta=True)
    plain = Predictor(model, card, device="cpu")
    agree_tta = (tta.predict_slices(mirrored).labels[:, :, ::-1] == tta.predict_slices(slices).labels).mean()
    agree_plain = (plain.predict_slices(mirrored).labels[:, :, ::-1] == plain.predict_slices(slices).labels).mean()
    assert agree_tta > 0.999 and agree_plain < agree_tta


def test_tta_flips_only_what_training_mirrored(model, card):
    """A model trained without left-right mirroring (sided classes) is not shown left-right flips: on the real CT
    that flip cost 0.23 held-out Dice (kidneys swapped sides). Rows only: invariant to a row flip, not to a column
    flip; no mirroring: TTA is a single pass, and says so."""
    slices = slices_like((3, 48, 48), seed=2)
    rows_only = Predictor(model, dataclasses.replace(card, mirror_axes=(0,)), device="cpu", tta=True)
    assert rows_only.flips == ((), (-2,)) and "rows only" in rows_only.notes[0]
    labels = rows_only.predict_slices(slices).labels
    assert (rows_only.predict_slices(slices[:, ::-1].copy()).labels[:, ::-1] == labels).mean() > 0.999
    assert (rows_only.predict_slices(slices[:, :, ::-1].copy()).labels[:, :, ::-1] == labels).mean() < 0.999
    unmirrored = Predictor(model, dataclasses.replace(card, mirror_axes=()), device="cpu", tta=True)
    assert unmirrored.flips == ((),) and "nothing to average" in unmirrored.notes[0]
    np.testing.assert_array_equal(unmirrored.predict_slices(slices).labels,
                                  Predictor(model, card, device="cpu").predict_slices(slices).labels)
    assert len(Predictor(model, card, device="cpu", tta=True).flips) == 4  # not recorded (older cards): all


def test_invalid_settings_are_refused(model, card):
    with pytest.raises(SwinsegError, match="--tta"):
        Predictor(model, card, device="cpu", protocol="reference", tta=True)
    with pytest.raises(SwinsegError, match="batch-size"):
        Predictor(model, card, device="cpu", batch_size=0)
    with pytest.raises(SwinsegError, match="4 classes but the network predicts 6"):
        Predictor(model, card.with_classes(["background", "a", "b", "c"]), device="cpu")
    with pytest.raises(SwinsegError, match="probabilities"):
        Predictor(model, card, device="cpu", protocol="reference").predict_slices(slices_like(), probabilities=True)


# ------------------------------------------------------------------------------ orientation round trip


@pytest.mark.parametrize("plane", ["axial", "sagittal"])
def test_flipped_and_permuted_scan_gives_the_same_mask_in_its_own_space(predictor, plane):
    original = io.Volume(ct_like((10, 24, 16)), (2.5, 0.8, 0.7), (10.0, -20.0, 30.0), tuple(np.eye(3).ravel()))
    flips, perm = (0, 2), (2, 0, 1)
    moved = transform_volume(original, flips, perm)
    # the test's own construction is consistent: SimpleITK orients both to the same array
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.DICOMOrient(as_sitk(moved), "LPS")), original.array
    )
    assert moved.array.shape != original.array.shape
    labels = predictor.predict_volume(original, plane=plane).labels
    labels_moved = predictor.predict_volume(moved, plane=plane).labels
    assert labels_moved.shape == moved.array.shape and len(np.unique(labels)) >= 3
    np.testing.assert_array_equal(undo_transform(labels_moved, flips, perm), labels)


def test_axial_slices_are_found_from_the_direction_not_the_array_order(predictor):
    """A scan stored with axial planes along the last array axis is still cut into axial slices."""
    original = io.Volume(ct_like((8, 40, 48)), (2.5, 0.8, 0.7), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    moved = transform_volume(original, (), (2, 1, 0))  # z first in index order: axial = array axis 2
    shapes = []
    predictor.predict_volume(moved, progress=shapes.append)
    assert sum(shapes) == 8  # 8 axial slices, not 48 sagittal ones


# ------------------------------------------------------------------------------------ post-processing


def test_keep_largest_component_per_class_uses_full_connectivity():
    labels = np.zeros((6, 12, 12), dtype=np.uint8)
    labels[0:2, 0:2, 0:2] = 1  # 8 voxels
    labels[4:6, 8:12, 8:12] = 1  # 32 voxels: kept
    labels[2, 2, 2] = 1  # touches the first blob only diagonally: joins it (26-connectivity)
    labels[3:5, 0:3, 6:9] = 2  # single component of class 2: kept whole
    labels[0, 11, 0] = 3
    labels[5, 11, 0] = 3  # two equal class-3 voxels: exactly one survives
    result = keep_largest_component(labels.copy())
    assert (result == 1).sum() == 32 and result[4:6, 8:12, 8:12].min() == 1
    assert (result == 2).sum() == 18 and (result == 3).sum() == 1
    assert result[0, 0, 0] == 0 and result[2, 2, 2] == 0


def test_class_subsets_by_name_or_id():
    names = ("background", "liver", "spleen", "aorta")
    assert parse_classes("Liver, 3", names) == [1, 3]
    assert parse_classes(["spleen"], names) == [2]
    with pytest.raises(SwinsegError, match="unknown class 'kidney'.*1=liver"):
        parse_classes("kidney", names)
    labels = np.array([0, 1, 2, 3, 2, 1], dtype=np.uint8)
    np.testing.assert_array_equal(keep_classes(labels, [1, 3]), [0, 1, 0, 3, 0, 1])


# ------------------------------------------------------------------------------------- cases and shards


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_plan_names_outputs_after_cases(tmp_path):
    for name in ("b_0000.nii.gz", "a.nrrd", "c.png", ".hidden.nii.gz", "notes.txt"):
        touch(tmp_path / "in" / name)
    cases = plan_cases([tmp_path / "in"], tmp_path / "out", probabilities=True)
    assert [c.output.name for c in cases] == ["a.nii.gz", "b.nii.gz", "c.png"]
    assert cases[0].probabilities == tmp_path / "out" / "a_probabilities.nii.gz"
    assert probabilities_path(Path("m/c.png")) == Path("m/c_probabilities.nii.gz")
    single = plan_cases([tmp_path / "in" / "a.nrrd"], tmp_path / "mask.nrrd")
    assert single == [Case(tmp_path / "in" / "a.nrrd", tmp_path / "mask.nrrd")]
    into_folder = plan_cases([tmp_path / "in" / "a.nrrd"], f"{tmp_path}/masks/")
    assert into_folder[0].output == tmp_path / "masks" / "a.nii.gz"


def test_plan_refuses_unsafe_or_ambiguous_outputs(tmp_path):
    scan = touch(tmp_path / "in" / "a.nii.gz")
    touch(tmp_path / "other" / "a_0000.nii.gz")
    with pytest.raises(SwinsegError, match="overwrite this input"):
        plan_cases([scan], scan)
    with pytest.raises(SwinsegError, match="output folder is an input folder"):
        plan_cases([tmp_path / "in"], tmp_path / "in")
    with pytest.raises(SwinsegError, match="would both write"):
        plan_cases([tmp_path / "in", tmp_path / "other"], tmp_path / "out")
    assert plan_cases([scan], tmp_path / "masks")[0].output == tmp_path / "masks" / "a.nii.gz"  # no suffix: a folder
    assert plan_cases([scan], str(tmp_path / "m") + "/")[0].output.parent == tmp_path / "m"
    with pytest.raises(SwinsegError, match="JPEG"):
        plan_cases([scan], tmp_path / "mask.jpg")
    with pytest.raises(SwinsegError, match="give a folder"):
        plan_cases([scan, tmp_path / "other" / "a_0000.nii.gz"], tmp_path / "mask.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SwinsegError, match="holds no scans"):
        plan_cases([tmp_path / "empty"], tmp_path / "out")


def test_shards_partition_the_cases():
    cases = [Case(Path(f"c{i}.nii.gz"), Path(f"o{i}.nii.gz")) for i in range(10)]
    shards = [shard_cases(cases, *parse_shard(f"{i}/3")) for i in range(3)]
    assert sorted(c.input.name for s in shards for c in s) == sorted(c.input.name for c in cases)
    assert [len(s) for s in shards] == [4, 3, 3]
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(SwinsegError, match="--shard"):
            parse_shard(bad)


def test_torchrun_environment():
    assert torchrun_rank({}) is None and torchrun_rank({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert torchrun_rank({"WORLD_SIZE": "4", "RANK": "5", "LOCAL_RANK": "1"}) == (5, 4, 1)
    assert rank_device("cpu", 3) == "cpu" and rank_device("cuda", 3) == "cuda:3"
    with pytest.raises(SwinsegError, match="RANK"):
        torchrun_rank({"WORLD_SIZE": "2"})


def write_nifti(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-0.8, -0.7, 2.5, 1.0])
    affine[:3, 3] = (12.0, -7.0, 30.0)
    nib.save(nib.Nifti1Image(np.asarray(array).T, affine), path)
    return path


def test_predict_cases_skips_finished_and_isolates_failures(predictor, tmp_path):
    good = [write_nifti(tmp_path / "in" / f"case{i}.nii.gz", ct_like(seed=i)) for i in range(2)]
    nan_scan = ct_like(seed=3).astype(np.float32)
    nan_scan[0, 0, 0] = np.nan
    write_nifti(tmp_path / "in" / "nan.nii.gz", nan_scan)
    touch(tmp_path / "in" / "broken.nii.gz")
    cases = plan_cases([tmp_path / "in"], tmp_path / "out")
    started = []
    first = list(predict_cases(predictor, cases, on_start=lambda case, n: started.append(n)))
    status = {r.case.input.name: r.status for r in first}
    assert status == {"broken.nii.gz": "failed", "case0.nii.gz": "done", "case1.nii.gz": "done", "nan.nii.gz": "failed"}
    messages = {r.case.input.name: r.message for r in first if r.status == "failed"}
    assert "nan.nii.gz" in messages["nan.nii.gz"] and "NaN" in messages["nan.nii.gz"]
    assert "broken.nii.gz" in messages["broken.nii.gz"]
    assert started == [8, 8]
    done = {r.case.input.name: r for r in first if r.status == "done"}
    assert done["case0.nii.gz"].to_dict()["shape"] == [48, 40, 8]
    mask = io.read_volume(tmp_path / "out" / "case0.nii.gz")
    np.testing.assert_array_equal(mask.array, predictor.predict_volume(io.read_volume(good[0])).labels)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case0.nii.gz", "case1.nii.gz"]

    again = list(predict_cases(predictor, cases))
    assert sorted(r.status for r in again) == ["failed", "failed", "skipped", "skipped"]
    before = (tmp_path / "out" / "case0.nii.gz").stat().st_mtime_ns
    redo = list(predict_cases(predictor, cases[1:2], RunOptions(overwrite=True)))  # sorted: broken, case0, ...
    assert [r.status for r in redo] == ["done"]
    assert (tmp_path / "out" / "case0.nii.gz").stat().st_mtime_ns != before


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_batchwise_normalisation_equals_the_training_preprocessing(predictor, card, modality):
    """Predict normalises batch by batch with whole-volume bounds: the same values as preprocess gives."""
    import dataclasses

    from swinseg.config import Preprocessing
    from swinseg.preprocess import normalize

    prep = Preprocessing(modality=modality)
    volume = transform_volume(
        io.Volume(ct_like((6, 24, 16)), (2.5, 0.8, 0.7), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel())), (1,), (1, 0, 2)
    )
    mr_predictor = Predictor(predictor.model, dataclasses.replace(card, preprocessing=prep), device="cpu")
    prepared = mr_predictor.prepare(volume)
    oriented = io.to_orientation(volume, prep.orientation)[0]
    np.testing.assert_array_equal(prepared.normalized(), normalize(oriented, prep))
    image = io.Volume(np.array([[0, 51], [255, 102]], dtype=np.uint8), (1.0, 1.0), (0.0, 0.0), (1.0, 0.0, 0.0, 1.0))
    np.testing.assert_allclose(mr_predictor.prepare(image).normalized()[0], [[0, 0.2], [1, 0.4]], rtol=1e-6)


def test_synapse_h5_images_are_taken_as_already_normalised(predictor, tmp_path):
    import h5py

    image = np.random.default_rng(1).random((3, 24, 16)).astype(np.float32)
    with h5py.File(tmp_path / "case0001.npy.h5", "w") as h5:
        h5["image"], h5["label"] = image, (image > 0.5).astype(np.uint8)
    prepared = predictor.prepare(io.read_volume(tmp_path / "case0001.npy.h5"))
    np.testing.assert_allclose(prepared.normalized(), image, rtol=0, atol=1e-7)  # no second CT window


def test_volume_probabilities_agree_with_the_labels(predictor):
    volume = io.Volume(ct_like((4, 24, 16)), (2.5, 0.8, 0.7), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    prediction = predictor.predict_volume(volume, probabilities=True)
    labels, probabilities = prediction.labels, prediction.probabilities
    assert probabilities.shape == (predictor.num_classes, *volume.array.shape)
    np.testing.assert_allclose(probabilities.astype(np.float32).sum(axis=0), 1.0, atol=5e-3)
    np.testing.assert_array_equal(labels, predictor.predict_volume(volume).labels)
    assert np.mean(probabilities.argmax(axis=0) == labels) > 0.99  # float16 ties may differ
