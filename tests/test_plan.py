"""The planner: the dataset fingerprint, every decision and its reason, `swinseg plan`, plan.json from training."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.config import ModelCard, Preprocessing, load_card
from swinseg.errors import SwinsegError
from swinseg.fingerprint import Fingerprint, fingerprint
from swinseg.phantom import CLASSES, write_phantom_dataset
from swinseg.plan import Plan, batch_rule, make_plan, mirror_decision, plan_training
from swinseg.training.data import read_training_cases
from swinseg.training.options import TrainConfig
from swinseg.training.samples import LoadedCase

CARD = load_card("swin_unet_test")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Three 8 x 64 x 64 phantom CTs in nnU-Net layout (5 x 2.2 x 2.2 mm)."""
    return write_phantom_dataset(tmp_path_factory.mktemp("data") / "ds", 3, seed=0, shape=(8, 64, 64))


def config(**options) -> TrainConfig:
    return TrainConfig(**{"model": "swin_unet_test", "batch_size": 4, "device": "cpu", **options})


def loaded(spacings, channel_label: int = 1) -> list[LoadedCase]:
    """Small synthetic cases with the given (z, y, x) spacings: a labelled block of `channel_label`."""
    rng = np.random.default_rng(0)
    cases = []
    for i, spacing in enumerate(spacings):
        label = np.zeros((3, 20, 24), np.uint8)
        label[1:, 5:12, 6:15] = channel_label
        cases.append(LoadedCase(f"c{i}", rng.normal(40, 20, label.shape).round().astype(np.int16), label, spacing))
    return cases


def test_fingerprint_matches_numpy_on_the_files(phantoms):
    cases = read_training_cases(phantoms, CARD.preprocessing, validation_cases=[])
    found = fingerprint(cases.training, cases.channel_name, seed=0, classes=CLASSES)
    images = [np.asarray(nib.load(phantoms / "imagesTr" / f"{n}_0000.nii.gz").dataobj) for n in cases.train_cases]
    labels = [np.asarray(nib.load(phantoms / "labelsTr" / f"{n}.nii.gz").dataobj) for n in cases.train_cases]
    assert found.num_cases == 3 and found.cases == ("phantom_000", "phantom_001", "phantom_002")
    assert found.shapes == ((8, 64, 64),) * 3 and found.spacings == ((5.0, 2.2, 2.2),) * 3
    summary = found.summary()
    assert summary["median_spacing"] == [5.0, 2.2, 2.2] and summary["max_shape"] == [8, 64, 64]
    # under 100k voxels a case: every voxel counts, so the statistics are exact
    foreground = np.concatenate([image[label > 0] for image, label in zip(images, labels)]).astype(np.float64)
    expected = {"mean": foreground.mean(), "sd": foreground.std(),
                **dict(zip(("p0.5", "p50", "p99.5"), np.percentile(foreground, (0.5, 50, 99.5))))}
    assert found.channel_name == "CT" and found.foreground == pytest.approx(expected)
    scan = np.concatenate([image.ravel() for image in images]).astype(np.float64)
    assert found.channels[0]["scan"] == pytest.approx(dict(zip(("p0.5", "p50", "p99.5"),
                                                               np.percentile(scan, (0.5, 50, 99.5)))))
    for entry in found.classes:
        masks = [label == entry["label"] for label in labels]
        sizes = [size * 5.0 * 2.2 * 2.2 for mask in masks
                 for size in np.bincount(scipy.ndimage.label(mask)[0].ravel())[1:]]
        assert entry["name"] == CLASSES[entry["label"]]
        assert entry["share"] == pytest.approx(sum(m.sum() for m in masks) / sum((lab > 0).sum() for lab in labels))
        assert entry["cases"] == sum(bool(m.any()) for m in masks) and entry["objects"] == len(sizes)
        assert entry["median_object_mm3"] == (pytest.approx(np.median(sizes), rel=1e-5) if sizes else None)
        volumes = [m.sum() * 5.0 * 2.2 * 2.2 / 1000 for m in masks if m.any()]
        assert entry["median_case_ml"] == (pytest.approx(np.median(volumes), rel=1e-5) if volumes else None)
    assert Fingerprint.from_dict(json.loads(json.dumps(found.to_dict()))) == found


def test_spacing_is_the_median_unless_a_flag_overrides_it():
    cases = loaded([(3.0, 0.7, 0.7), (3.0, 0.8, 0.9), (2.0, 1.5, 1.5)])
    plan = make_plan(cases, "CT", CARD, config())
    assert plan.spacing.value == [0.8, 0.9] and not plan.spacing.overridden
    assert "the median in-plane spacing of 3 training case(s)" in plan.spacing.reason
    assert plan.preprocessing.spacing == (0.8, 0.9)
    given = make_plan(cases, "CT", CARD, config(spacing="1.5,1.25"))
    assert given.spacing.value == [1.5, 1.25] and given.spacing.overridden and given.spacing.flag == "--spacing"
    assert given.lines()[0] == "spacing: 1.5x1.25 mm — given [--spacing]"
    whole = make_plan(cases, "CT", CARD, config(spacing="none"))
    assert whole.spacing.value is None and whole.preprocessing.spacing is None
    assert whole.oversample_foreground.value == 0.0  # whole slices: nothing to centre
    with pytest.raises(SwinsegError, match="--spacing"):
        make_plan(cases, "CT", CARD, config(spacing="fine"))


def test_ct_window_auto_comes_from_the_foreground_percentiles():
    cases = loaded([(3.0, 1.0, 1.0)] * 2)
    card = dataclasses.replace(CARD, preprocessing=Preprocessing(window="auto"))
    plan = make_plan(cases, "CT", card, config())
    foreground = np.concatenate([case.image[case.label > 0] for case in cases]).astype(np.float64)
    assert plan.intensities.value["window"] == pytest.approx(list(np.percentile(foreground, (0.5, 99.5))), abs=0.01)
    assert plan.preprocessing.window == tuple(plan.intensities.value["window"])
    assert "the 0.5/99.5 percentiles of the training foreground" in plan.intensities.reason
    assert make_plan(cases, "CT", CARD, config()).intensities.value == {"modality": "CT", "window": [-125.0, 275.0]}


def test_an_mr_channel_gets_per_volume_percentiles():
    plan = make_plan(loaded([(3.0, 1.0, 1.0)]), "T2", CARD, config())
    assert plan.intensities.value == {"modality": "MR", "percentiles": [0.5, 99.5]}
    assert plan.intensities.text == "per-volume percentiles [0.5, 99.5]"
    assert "instead of the card's CT window" in plan.intensities.reason and "'T2'" in plan.intensities.reason
    assert plan.preprocessing.modality == "MR" and plan.preprocessing.window is None


@pytest.mark.parametrize("classes, axes", [
    (("background", "kidney_left", "kidney_right"), [0]),
    (("background", "lung_r", "lung_l"), [0]),
    (("background", "liver", "spleen"), [0]),
    (("background", "tumour", "edema"), [0, 1]),
])
def test_left_right_mirroring_is_off_for_sided_classes(classes, axes):
    decision = mirror_decision(classes, Preprocessing())
    assert decision.value == axes
    if axes == [0]:
        assert "no left-right mirroring" in decision.reason
    assert mirror_decision(classes, Preprocessing(plane="sagittal")).value == [0, 1]  # no left-right axis in plane
    rows_left_right = Preprocessing(orientation="PLS")  # arrays (S, L, P): axial slices run left-right in rows
    assert mirror_decision(classes, rows_left_right).value == ([1] if axes == [0] else [0, 1])


@pytest.mark.parametrize("augment, axes", [("strong", (0,)), ("reference", (0, 1)), ("none", ())])
def test_the_trained_card_records_what_training_flipped(augment, axes):
    """What predict's TTA may flip: the strong augmentation's planned axes, both for the reference augmentation
    (rot90 and flips), none without augmentation; kept through the card's dict (checkpoints, stored models)."""
    card = dataclasses.replace(CARD, classes=("background", "liver", "kidney_left", "kidney_right", "aorta",
                                              "spleen"))
    plan = make_plan(loaded([(3.0, 1.0, 1.0)] * 2), "CT", card, config(augment=augment))
    trained = plan.apply_to_card(card)
    assert trained.mirror_axes == axes and CARD.mirror_axes is None
    assert ModelCard.from_dict(trained.to_dict()).mirror_axes == axes
    with pytest.raises(SwinsegError, match="mirror_axes"):
        dataclasses.replace(CARD, mirror_axes=(2,))


def test_batch_size_fits_the_device_and_iterations_follow():
    cases = loaded([(3.0, 1.0, 1.0)] * 3)  # 9 slices
    plan = make_plan(cases, "CT", CARD, config(epochs=5))
    assert plan.batch_size.value == 4 and plan.batch_size.flag == "--batch-size" and "cpu" in plan.batch_size.reason
    assert plan.iterations.value == 5 * 3  # 5 epochs x ceil(9 / 4) batches
    budget = make_plan(cases, "CT", CARD, config(iterations=500)).iterations
    assert budget.value == 501 and budget.flag == "--iterations"  # 167 whole epochs of 3 batches
    tiny = load_card("swin_unet_tiny")
    assert batch_rule(24, tiny, 80 * 2**30).value == 24
    small = batch_rule(24, tiny, 4 * 2**30, processes=2)
    assert 2 <= small.value < 24 and small.value % 2 == 0 and small.reason.startswith("reduced from the configured 24")
    assert not small.overridden


def test_unset_batch_is_16_for_the_scratch_recipe_on_a_cpu_and_24_otherwise():
    cases = loaded([(3.0, 1.0, 1.0)] * 20)  # 60 slices
    scratch = make_plan(cases, "CT", CARD, config(batch_size=None)).batch_size
    assert (scratch.value, scratch.flag) == (16, None) and "scratch recipe on a cpu" in scratch.reason
    published = make_plan(cases, "CT", CARD, config(batch_size=None, recipe="published")).batch_size
    assert (published.value, published.flag) == (24, None)
    given = make_plan(cases, "CT", CARD, config(batch_size=24)).batch_size  # the flag wins, even at 24
    assert (given.value, given.flag) == (24, "--batch-size")
    planned = make_plan(cases, "CT", CARD, config(batch_size=None)).apply_to_config(config(batch_size=None))
    assert planned.batch_size == 16 and planned.learning_rate == pytest.approx(1e-3 * 16 / 24)


def test_plan_round_trips_and_explains_every_decision(phantoms):
    cases = read_training_cases(phantoms, CARD.preprocessing)
    plan = plan_training(cases, CARD, config(data=str(phantoms)))
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    lines = plan.lines()
    assert len(lines) == 8 and all(" — " in line for line in lines)
    assert lines[2].startswith("patch size: 64x64 px crops — ") and "1 tile(s)" in lines[2]
    card = plan.apply_to_card(CARD)
    assert card.fingerprint == plan.fingerprint.to_dict()
    assert ModelCard.from_dict(card.to_dict()).fingerprint == card.fingerprint


def test_plan_command_prints_the_plan_and_json(phantoms, tmp_path):
    result = CliRunner().invoke(app, ["plan", str(phantoms), "-m", "swin_unet_test", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for text in ("nnU-Net layout, 2 training cases", "fingerprint", "kidney_left", "2.2x2.2 mm", "mirror axes"):
        assert text in result.output
    given = CliRunner().invoke(app, ["plan", str(phantoms), "-m", "swin_unet_test", "--spacing", "3,3", "--json"])
    assert given.exit_code == 0, given.output
    values = json.loads(given.stdout)
    assert values["spacing"]["value"] == [3.0, 3.0] and values["spacing"]["overridden"] is True
    assert values["fingerprint"]["num_cases"] == 2
    synapse = tmp_path / "synapse"
    (synapse / "train_npz").mkdir(parents=True)
    np.savez(synapse / "train_npz" / "case0001_slice000.npz", image=np.zeros((8, 8), np.float32),
             label=np.zeros((8, 8), np.uint8))
    result = CliRunner().invoke(app, ["plan", str(synapse)])
    assert result.exit_code == 0, result.output
    assert "carry no spacing" in result.output and "whole slices resized" in result.output
    refused = CliRunner().invoke(app, ["plan", str(synapse), "--spacing", "2,2"])
    assert refused.exit_code == 1 and "carry no pixel spacing" in refused.output


def test_train_writes_the_plan_and_the_card_carries_the_fingerprint(phantoms, tmp_path):
    from swinseg.training.loop import train
    from swinseg.weights import load_checkpoint

    run = tmp_path / "run"
    train(config(data=str(phantoms), output=str(run), epochs=1, val_every=0, num_workers=0))
    plan = Plan.from_dict(json.loads((run / "plan.json").read_text()))
    _, card = load_checkpoint(run / "final.safetensors")
    assert card.preprocessing == plan.preprocessing and card.preprocessing.spacing == (2.2, 2.2)
    assert card.fingerprint == plan.fingerprint.to_dict() and card.fingerprint["num_cases"] == 2
    assert card.mirror_axes == (0,) == tuple(plan.mirror_axes.value)  # liver, spleen: no left-right flips
