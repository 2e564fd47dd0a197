"""Normalisation and the matmul/gather resize against scipy.ndimage.zoom (the reference's resize)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from swinseg.config import Preprocessing
from swinseg.preprocess import (
    nearest_indices,
    normalize,
    resize_array,
    resize_slices,
    zoom_gather,
    zoom_matrix,
)

SIZES = [(512, 224), (224, 512), (37, 64), (64, 37), (101, 224), (300, 224), (7, 7)]


def reference_zoom(image: np.ndarray, size: tuple[int, int], order: int) -> np.ndarray:
    """Exactly how the reference code resizes a slice."""
    x, y = image.shape
    return scipy.ndimage.zoom(image, (size[0] / x, size[1] / y), order=order)


@pytest.mark.parametrize("n_in,n_out", SIZES)
@pytest.mark.parametrize("order", [1, 3])
def test_zoom_matrix_equals_scipy_along_one_axis(n_in: int, n_out: int, order: int) -> None:
    data = np.random.default_rng(n_in * 1000 + n_out).random((n_in, 5))
    expected = scipy.ndimage.zoom(data, (n_out / n_in, 1.0), order=order)
    assert zoom_matrix(n_in, n_out, order).shape == (n_out, n_in)
    np.testing.assert_allclose(zoom_matrix(n_in, n_out, order) @ data, expected, atol=1e-12)


@pytest.mark.parametrize("in_size,out_size", [((512, 512), (224, 224)), ((224, 224), (512, 512)),
                                              ((61, 90), (64, 64)), ((64, 64), (45, 77))])
def test_resize_slices_equals_scipy_zoom_cubic(in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    batch = rng.random((3, *in_size)).astype(np.float32)
    expected = np.stack([reference_zoom(s, out_size, 3) for s in batch])
    got = resize_slices(torch.from_numpy(batch), out_size, order=3)
    assert got.dtype == torch.float32 and tuple(got.shape) == (3, *out_size)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    # with a channel axis, and the numpy twin used by the augmentation
    got_channels = resize_slices(torch.from_numpy(batch[:, None]), out_size, order=3)
    np.testing.assert_allclose(got_channels[:, 0].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(resize_array(batch, out_size, order=3), expected, atol=1e-5)


def test_scipy_edge_quirk_is_reproduced() -> None:
    """scipy's 512 -> 224 zoom fills the last row/column with cval 0; the reference trained on that."""
    ones = np.ones((512, 512), dtype=np.float32)
    expected = reference_zoom(ones, (224, 224), 3)
    assert expected[-1].max() == 0 and expected[:-1, :-1].min() > 0.99  # the quirk itself
    np.testing.assert_allclose(resize_array(ones, 224, 3), expected, atol=1e-6)
    _, inside = zoom_gather(512, 224)
    assert not inside[-1] and inside[:-1].all()


@pytest.mark.parametrize("in_size,out_size", [((224, 224), (512, 512)), ((512, 512), (224, 224)),
                                              ((64, 64), (90, 61)), ((58, 58), (224, 224))])
def test_order0_gather_equals_scipy_zoom(in_size: tuple[int, int], out_size: tuple[int, int]) -> None:
    labels = np.random.default_rng(2).integers(0, 9, size=(2, *in_size)).astype(np.uint8)
    expected = np.stack([reference_zoom(s, out_size, 0) for s in labels])
    got = resize_slices(torch.from_numpy(labels), out_size, order=0)
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), expected)
    np.testing.assert_array_equal(resize_array(labels, out_size, order=0), expected)


def test_nearest_indices_match_scipy_when_enlarging() -> None:
    """The reference's resize back of predictions, 224 -> 512, is a plain gather with the contract formula."""
    labels = np.random.default_rng(3).integers(0, 9, size=(224, 224)).astype(np.uint8)
    index = nearest_indices(224, 512)
    np.testing.assert_array_equal(labels[np.ix_(index, index)], reference_zoom(labels, (512, 512), 0))
    for n_in, n_out in [(224, 512), (64, 333), (5, 1)]:
        gather, inside = zoom_gather(n_in, n_out)
        assert inside.all()
        np.testing.assert_array_equal(nearest_indices(n_in, n_out), gather)


def test_normalize_ct_window_and_mr_percentiles() -> None:
    hu = np.array([-1000, -125, 75, 275, 3000], dtype=np.int16)
    np.testing.assert_allclose(normalize(hu, Preprocessing()), [0.0, 0.0, 0.5, 1.0, 1.0])
    assert normalize(hu, Preprocessing()).dtype == np.float32
    mr = np.arange(1001, dtype=np.float32)
    scaled = normalize(mr, Preprocessing(modality="MR", window=None, percentiles=(10, 90)))
    assert scaled[100] == 0 and scaled[900] == 1 and scaled[0] == 0 and scaled[-1] == 1
    np.testing.assert_allclose(scaled[500], 0.5)
    flat = normalize(np.full(10, 7.0), Preprocessing(modality="MR", window=None))
    assert not flat.any()
