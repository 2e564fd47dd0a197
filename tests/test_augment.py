"""The strong (nnU-Net) augmentation: reproducible per sample, labels moving with the image, each transform
drawn, and the `--augment` choices of training."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from swinseg.errors import SwinsegError
from swinseg.training import augment
from swinseg.training.augment import StrongBounds, strong_sample
from swinseg.training.loop import TrainConfig
from swinseg.training.samples import GridCase, GridSlices, SliceDataset

SPATIAL = ("P_SCALE", "P_ROTATE", "P_DEFORM", "P_MIRROR")
INTENSITY = ("P_NOISE", "P_BLUR", "P_BRIGHTNESS", "P_CONTRAST", "P_LOW_RES", "P_GAMMA_INVERTED", "P_GAMMA")


def organs(shape=(60, 70)) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0-3 in blobs, and an image whose intensity is label / 4 + 0.1."""
    rows, cols = np.indices(shape)
    label = np.zeros(shape, dtype=np.uint8)
    label[(rows - 20) ** 2 + (cols - 25) ** 2 < 120] = 1
    label[(rows - 40) ** 2 / 2 + (cols - 45) ** 2 < 90] = 2
    label[10:18, 45:62] = 3
    return (label / 4 + 0.1).astype(np.float32), label


def switch(monkeypatch, names, value: float) -> None:
    for name in names:
        monkeypatch.setattr(augment, name, value)


def test_same_seed_same_sample_other_seed_other_sample():
    image, label = organs()
    first = strong_sample(image, label, np.random.default_rng((1, 2, 3)), 48, (30.0, 35.0), (1.0, 1.0))
    again = strong_sample(image, label, np.random.default_rng((1, 2, 3)), 48, (30.0, 35.0), (1.0, 1.0))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    differ = sum(not np.array_equal(first[0], strong_sample(image, label, np.random.default_rng(s), 48,
                                                            (30.0, 35.0), (1.0, 1.0))[0]) for s in range(10))
    assert differ >= 8


def test_without_transforms_a_sample_is_the_crop_or_the_resize(monkeypatch):
    switch(monkeypatch, SPATIAL + INTENSITY, 0.0)
    image, label = organs()
    got_image, got_label = strong_sample(image, label, np.random.default_rng(0), 32, (20 + 15.5, 10 + 15.5), (1, 1))
    np.testing.assert_allclose(got_image, image[20:52, 10:42], atol=1e-6)
    np.testing.assert_array_equal(got_label, label[20:52, 10:42])
    # a crop reaching beyond the slice gets background there
    edge_image, edge_label = strong_sample(image, label, np.random.default_rng(0), 32, (-4 + 15.5, 0 + 15.5), (1, 1))
    assert np.all(edge_image[:4] == 0) and np.all(edge_label[:4] == 0)
    np.testing.assert_allclose(edge_image[4:], image[:28, :32], atol=1e-6)
    # a whole-slice sample (30 x 30 from 60 x 70): edge-aligned points of the source, bilinear
    half_image, _ = strong_sample(image, label, np.random.default_rng(0), 30, (29.5, 34.5), (2.0, 70 / 30))
    assert half_image.shape == (30, 30)
    np.testing.assert_allclose(half_image[5, 5], scipy.ndimage.map_coordinates(
        image, [[0.5 + 2 * 5], [(70 / 30) * 5.5 - 0.5]], order=1)[0], atol=1e-5)


@pytest.mark.parametrize("transform", ["P_SCALE", "P_ROTATE", "P_DEFORM", "P_MIRROR"])
def test_labels_move_with_the_image(monkeypatch, transform):
    switch(monkeypatch, SPATIAL + INTENSITY, 0.0)
    switch(monkeypatch, [transform], 1.0)
    image, label = organs()
    for seed in range(5):
        got_image, got_label = strong_sample(image, label, np.random.default_rng(seed), 48, (29.5, 34.5), (1, 1))
        from_image = np.clip(np.rint((got_image - 0.1) * 4), 0, 3)
        inside = got_image > 0.05  # not beyond the slice
        assert (from_image[inside] == got_label[inside]).mean() > 0.95  # only edges may blur
        assert not np.array_equal(got_label, label[6:54, 11:59])  # it did move
        mirrored_labels_only = np.flip(got_label, (0, 1))
        assert (from_image[inside] == mirrored_labels_only[inside]).mean() < 0.9  # the check can fail


def test_intensity_transforms_change_values_not_labels(monkeypatch):
    switch(monkeypatch, SPATIAL + INTENSITY, 0.0)
    image, label = organs()
    plain = strong_sample(image, label, np.random.default_rng(0), 40, (30.0, 35.0), (1, 1))
    for name in INTENSITY:
        switch(monkeypatch, INTENSITY, 0.0)
        switch(monkeypatch, [name], 1.0)
        got = strong_sample(image, label, np.random.default_rng(0), 40, (30.0, 35.0), (1, 1))
        np.testing.assert_array_equal(got[1], plain[1])
        assert got[0].dtype == np.float32 and np.isfinite(got[0]).all()
        assert np.abs(got[0] - plain[0]).max() > 1e-3, name


def test_class_shift_moves_each_labelled_class_by_its_own_constant(monkeypatch):
    switch(monkeypatch, SPATIAL + INTENSITY, 0.0)
    monkeypatch.setattr(augment, "P_CLASS_SHIFT", 1.0)
    image, label = organs()
    plain, plain_labels = strong_sample(image, label, np.random.default_rng(0), 40, (29.5, 34.5), (1, 1))
    shifts = set()
    for seed in range(6):
        got, labels = strong_sample(image, label, np.random.default_rng(seed), 40, (29.5, 34.5), (1, 1),
                                    StrongBounds(class_shift=0.3))
        np.testing.assert_array_equal(labels, plain_labels)
        moved = got - plain
        assert np.array_equal(moved[labels == 0], np.zeros((labels == 0).sum(), np.float32))  # background stays
        for organ in (1, 2, 3):
            inside = moved[labels == organ]
            assert np.ptp(inside) < 1e-6 and abs(inside[0]) <= 0.3 + 1e-6  # one shift per class, within bounds
            shifts.add(round(float(inside[0]), 4))
        assert 0.0 <= got.min() and got.max() <= 1.0
    assert len(shifts) > 12  # classes and samples draw their own shifts
    off = strong_sample(image, label, np.random.default_rng(0), 40, (29.5, 34.5), (1, 1), StrongBounds())
    np.testing.assert_array_equal(off[0], plain)
    as_float = strong_sample(image, label.astype(np.float32), np.random.default_rng(0), 40, (29.5, 34.5), (1, 1),
                             StrongBounds(class_shift=0.3))  # Synapse npz labels are float32
    np.testing.assert_array_equal(as_float[0], strong_sample(image, label, np.random.default_rng(0), 40,
                                                             (29.5, 34.5), (1, 1), StrongBounds(class_shift=0.3))[0])


def test_class_shift_is_an_option_off_by_default():
    assert TrainConfig(data="d", output="o").class_shift == 0.0
    assert TrainConfig(data="d", output="o", recipe="published").class_shift == 0.0
    assert TrainConfig(data="d", output="o", class_shift="0.375").class_shift == 0.375  # a flag's text
    with pytest.raises(SwinsegError, match="--class-shift is part of the strong augmentation"):
        TrainConfig(data="d", output="o", recipe="published", class_shift=0.2)
    with pytest.raises(SwinsegError, match="--class-shift"):
        TrainConfig(data="d", output="o", class_shift=1.5)


def test_context_channels_share_one_transform():
    image, label = organs()
    stack = np.stack([image, image * 0.5, image * 0.25])
    got, _ = strong_sample(stack, label, np.random.default_rng(3), 40, (30.0, 35.0), (1, 1))
    assert got.shape == (3, 40, 40)
    support = [channel > 1e-6 for channel in got]
    assert np.array_equal(support[0], support[1]) and np.array_equal(support[0], support[2])


def test_slice_dataset_draws_strong_samples_per_epoch():
    image, label = organs((40, 40))
    case = GridCase("c", np.stack([image] * 3).astype(np.float16), np.stack([label] * 3), {1: np.argwhere(
        np.stack([label] * 3) == 1).astype(np.int32)})
    dataset = SliceDataset(GridSlices([case], context=1), 32, augment="strong", seed=7)
    first = dataset[1]["image"]
    assert tuple(first.shape) == (3, 32, 32)
    np.testing.assert_array_equal(dataset[1]["image"], first)  # the same epoch, the same draw
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[1]["image"], first)
    with pytest.raises(SwinsegError, match="--augment 'heavy'"):
        SliceDataset(GridSlices([case]), 32, augment="heavy")


def test_augment_option_reads_old_configs_and_refuses_unknown_values():
    assert TrainConfig(augment=True).augment == "reference"  # swinseg 0.1's config.yaml: augment: true
    assert TrainConfig(augment="false").augment == "none"
    assert TrainConfig(augment="Strong").augment == "strong"
    with pytest.raises(SwinsegError, match="--augment"):
        TrainConfig(augment="heavy")
