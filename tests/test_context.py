"""2.5-D context (`context_slices`): the neighbours a slice is fed with, in predict and in training, for every
orientation and plane; the card and network that carry it; the ImageNet initialisation of a wider input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F
from geometry import as_sitk, transform_volume

from swinseg import io
from swinseg.config import ModelCard, load_card
from swinseg.errors import SwinsegError
from swinseg.model import SwinUnet, build_model
from swinseg.phantom import write_phantom_dataset
from swinseg.predict import Predictor
from swinseg.preprocess import context_indices
from swinseg.pretrained import spread_rgb_kernel
from swinseg.training.data import open_training_data

LPS_AXIS = {"axial": 0, "coronal": 1, "sagittal": 2}  # array axis of each plane's slices in an LPS array
SHAPE = (7, 9, 8)  # LPS (z, y, x): each plane has a handful of slices


def test_context_indices_repeat_the_edge_slices():
    np.testing.assert_array_equal(context_indices(np.array([0, 1, 4]), 5, 2),
                                  [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [2, 3, 4, 4, 4]])
    np.testing.assert_array_equal(context_indices(np.array([0]), 1, 1), [[0, 0, 0]])


def coded_volume(plane: str) -> io.Volume:
    """An LPS volume whose every voxel holds 20 HU x (its slice number along `plane`) - 100: the window
    [-125, 275] keeps them apart after normalisation, (20 k + 25) / 400."""
    index = np.indices(SHAPE)[LPS_AXIS[plane]]
    return io.Volume((20 * index - 100).astype(np.int16), (3.0, 2.0, 2.5), (5.0, -7.0, 11.0),
                     tuple(np.eye(3).ravel()))


def expected_channels(plane: str, context: int) -> np.ndarray:
    """(slices, 2k+1) normalised values: slice z's input holds slices z-k .. z+k, edges repeated."""
    depth = SHAPE[LPS_AXIS[plane]]
    neighbours = np.clip(np.arange(depth)[:, None] + np.arange(-context, context + 1)[None, :], 0, depth - 1)
    return (20 * neighbours + 25) / 400.0


def recorded_inputs(predictor: Predictor, volume: io.Volume, plane: str) -> np.ndarray:
    """The centre pixel of every channel of every network input the predictor builds for `volume`."""
    seen = []

    def network(images: torch.Tensor) -> torch.Tensor:
        seen.append(images[:, :, images.shape[-2] // 2, images.shape[-1] // 2].numpy().copy())
        return torch.zeros((images.shape[0], predictor.num_classes, *images.shape[-2:]))

    predictor.network = network
    predictor.predict_volume(volume, plane=plane)
    return np.concatenate(seen)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
@pytest.mark.parametrize("stored", [((), (0, 1, 2)), ((0, 2), (2, 0, 1)), ((1,), (1, 2, 0))])
@pytest.mark.parametrize("context", [1, 2])
def test_predict_feeds_each_slice_between_its_neighbours_whatever_the_array_order(plane, stored, context):
    card = load_card("swin_unet_test").with_context(context)
    predictor = Predictor(build_model(card.network), card, device="cpu", batch_size=3)
    original = coded_volume(plane)
    moved = transform_volume(original, *stored)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.DICOMOrient(as_sitk(moved), "LPS")), original.array)
    got = recorded_inputs(predictor, moved, plane)
    np.testing.assert_allclose(got, expected_channels(plane, context), atol=2e-3)


def test_tiled_prediction_feeds_the_same_neighbours():
    card = load_card("swin_unet_test").with_context(1)
    card = ModelCard.from_dict({**card.to_dict(), "preprocessing": {**card.preprocessing.to_dict(),
                                                                    "spacing": [1.0, 1.0]}})
    predictor = Predictor(build_model(card.network), card, device="cpu", batch_size=2)
    got = recorded_inputs(predictor, coded_volume("coronal"), "coronal")  # 7 x 8 slices at 3 x 2.5 mm: one tile
    np.testing.assert_allclose(got, expected_channels("coronal", 1), atol=2e-3)


# -------------------------------------------------------------------------------------------------- training


def write_coded_dataset(root: Path, plane: str, stored) -> Path:
    """One case of coded_volume(plane), stored flipped/permuted in a NIfTI file, in nnU-Net layout."""
    volume = transform_volume(coded_volume(plane), *stored)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    sitk.WriteImage(as_sitk(volume), str(root / "imagesTr" / "coded_0000.nii.gz"))
    labels = io.Volume((volume.array > -60).astype(np.uint8), volume.spacing, volume.origin, volume.direction)
    sitk.WriteImage(as_sitk(labels), str(root / "labelsTr" / "coded.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"},
                                                   "labels": {"background": 0, "liver": 1}}))
    return root


@pytest.mark.parametrize("plane", ["axial", "coronal"])
@pytest.mark.parametrize("spacing", ["none", (2.0, 2.0)])
def test_training_samples_carry_the_neighbours_predict_feeds(tmp_path, plane, spacing):
    root = write_coded_dataset(tmp_path / "ds", plane, ((0, 2), (2, 0, 1)))
    prep = load_card("swin_unet_test").with_context(1).preprocessing
    prep = type(prep)(**{**prep.to_dict(), "plane": plane, "spacing": None if spacing == "none" else spacing})
    data = open_training_data(root, img_size=32, preprocessing=prep, augment="none", validation_cases=[])
    expected = expected_channels(plane, 1)
    for index in range(len(data.slices)):
        sample = data.slices[index]
        z = int(sample["name"].rsplit("_slice", 1)[1])
        image = sample["image"].numpy()
        assert image.shape == (3, 32, 32)
        for channel in range(3):
            inside = image[channel][image[channel] > 0.01]  # a crop may reach beyond the slice (0 there)
            assert inside.size > 0
            np.testing.assert_allclose(inside, expected[z, channel], atol=2e-3)


def test_synapse_slices_find_their_neighbours_by_slice_number(tmp_path):
    from swinseg.training.samples import NpzSlices

    for case in ("case0001", "case0002"):
        for z in range(4):
            np.savez(tmp_path / f"{case}_slice{z:03d}.npz", image=np.full((6, 6), z + (case == "case0002") * 10.0,
                                                                              dtype=np.float32),
                     label=np.zeros((6, 6), dtype=np.uint8))
    names = ["case0002_slice003", "case0001_slice002", "case0001_slice000", "case0001_slice001", "case0002_slice000",
             "case0001_slice003"]  # listed out of order, case0002's slices 1 and 2 not listed
    slices = NpzSlices(tmp_path, names, context=1)
    got = {name: slices.load(i)[0][:, 0, 0].tolist() for i, name in enumerate(names)}
    assert got["case0001_slice000"] == [0, 0, 1]
    assert got["case0001_slice002"] == [1, 2, 3]
    assert got["case0001_slice003"] == [2, 3, 3]
    assert got["case0002_slice000"] == [10, 10, 13]  # the next listed slice of its own case
    assert NpzSlices(tmp_path, names).load(0)[0].shape == (6, 6)  # no context: the slice alone


# ------------------------------------------------------------------------------------------ card and network


def test_cards_keep_context_and_input_channels_consistent():
    card = load_card("swin_unet_test")
    assert card.preprocessing.context_slices == 0 and "context_slices" not in card.to_dict()["preprocessing"]
    two = card.with_context(2)
    assert two.network.in_chans == 5 and two.preprocessing.input_channels == 5
    assert card.with_context(1).network.in_chans == 3
    again = ModelCard.from_dict(two.to_dict())
    assert (again.preprocessing, again.network) == (two.preprocessing, two.network)
    wrong = {**two.to_dict(), "network": {**two.network.to_dict(), "in_chans": 3}}
    with pytest.raises(SwinsegError, match="in_chans 5"):
        ModelCard.from_dict(wrong)
    with pytest.raises(SwinsegError, match="context_slices"):
        ModelCard.from_dict({**card.to_dict(), "preprocessing": {"context_slices": 9}})


def test_a_wider_input_layer_sees_a_stack_of_equal_slices_as_imagenet_sees_the_grey_slice():
    rgb = torch.randn(12, 3, 4, 4)
    grey = torch.rand(2, 1, 16, 16)
    expected = F.conv2d(grey.expand(-1, 3, -1, -1), rgb, stride=4)
    for channels in (1, 5):
        spread = spread_rgb_kernel(rgb, channels)
        assert spread.shape == (12, channels, 4, 4)
        torch.testing.assert_close(F.conv2d(grey.expand(-1, channels, -1, -1), spread, stride=4), expected)


@pytest.mark.slow
def test_context_model_trains_predicts_and_exports(tmp_path):
    from swinseg.training.loop import TrainConfig, train

    data = write_phantom_dataset(tmp_path / "ds", 2, seed=0, shape=(4, 64, 64), spacing=(10.0, 5.5, 5.5))
    config = TrainConfig(data=str(data), output=str(tmp_path / "run"), model="swin_unet_test", epochs=1,
                         batch_size=4, val_cases=["phantom_001"], num_workers=0, device="cpu", context_slices=2,
                         augment="strong")
    result = train(config)
    assert result.card.preprocessing.context_slices == 2 and result.model.config.in_chans == 5
    assert result.history[-1]["val_dice"] >= 0.0
    from swinseg.weights import load_checkpoint

    model, card = load_checkpoint(tmp_path / "run" / "final.safetensors")
    assert card.preprocessing.context_slices == 2 and model.patch_embed.proj.weight.shape[1] == 5
    volume = io.read_volume(data / "imagesTr" / "phantom_001_0000.nii.gz")
    torch_labels = Predictor(model, card, device="cpu").predict_volume(volume).labels
    assert torch_labels.shape == volume.array.shape
    pytest.importorskip("onnxruntime")
    onnx_labels = Predictor(model, card, device="cpu", backend="onnxruntime").predict_volume(volume).labels
    assert (onnx_labels == torch_labels).mean() > 0.999
    finetune = TrainConfig(data=str(data), output=str(tmp_path / "ft"), checkpoint=str(tmp_path / "run" /
                           "final.safetensors"), model=None, epochs=1, batch_size=4, num_workers=0, device="cpu",
                           context_slices=1)
    with pytest.raises(SwinsegError, match="context_slices 2"):
        train(finetune)


def test_the_network_refuses_inputs_of_another_width():
    model = SwinUnet(load_card("swin_unet_test").with_context(2).network)
    with pytest.raises(SwinsegError, match="1 or 5 input channels"):
        model(torch.zeros(1, 3, 64, 64))
