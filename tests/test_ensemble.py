"""Ensembles: the softmax of several models averaged on each scan's own grid."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from typer.testing import CliRunner

from swinseg import io
from swinseg.cli import app
from swinseg.ensemble import Ensemble
from swinseg.errors import SwinsegError
from swinseg.predict import Predictor
from swinseg.weights import load_checkpoint, save_checkpoint


@pytest.fixture(scope="module")
def network(checkpoint):
    return load_checkpoint(checkpoint)


def scan(shape=(12, 40, 36)) -> io.Volume:
    array = np.random.default_rng(0).uniform(-300, 300, shape).astype(np.float32)
    return io.Volume(array, (2.0, 1.5, 1.5), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))


def in_plane(card, plane: str):
    return dataclasses.replace(card, preprocessing=dataclasses.replace(card.preprocessing, plane=plane))


def test_an_ensemble_of_one_equals_that_model_and_averaging_it_with_itself_too(network):
    model, card = network
    predictor = Predictor(model, card, device="cpu")
    alone = predictor.predict_volume(scan(), probabilities=True)
    got = Ensemble([predictor]).predict_volume(scan(), probabilities=True)
    np.testing.assert_array_equal(got.labels, alone.labels)
    np.testing.assert_array_equal(got.probabilities, alone.probabilities)
    twice = Ensemble([predictor, predictor]).predict_volume(scan(), probabilities=True)  # averaged
    np.testing.assert_allclose(twice.probabilities.astype(np.float32), alone.probabilities.astype(np.float32),
                               atol=1e-3)
    assert np.mean(twice.labels == alone.labels) >= 0.999  # random models' float32 softmax can tie, logits not


def test_an_axial_and_a_coronal_model_average_what_each_gives_alone(network):
    model, card = network
    members = [Predictor(model, in_plane(card, plane), device="cpu") for plane in ("axial", "coronal")]
    alone = [member.predict_volume(scan(), probabilities=True).probabilities.astype(np.float32) for member in members]
    assert np.abs(alone[0] - alone[1]).max() > 0.01  # the two planes really differ
    averaged = Ensemble(members).predict_volume(scan(), probabilities=True)
    labels, probabilities = averaged.labels, averaged.probabilities
    mean = (alone[0] + alone[1]) / 2
    assert probabilities.shape == mean.shape == (len(card.classes), *scan().array.shape)
    np.testing.assert_allclose(probabilities.astype(np.float32), mean, atol=2e-3)
    assert np.mean(labels == mean.argmax(axis=0)) >= 0.999


def test_models_with_other_classes_are_refused_with_the_difference(network):
    model, card = network
    other = card.with_classes(["background", "liver", "spleen", "kidney_left", "kidney_right", "pancreas"])
    with pytest.raises(SwinsegError, match="b.safetensors predicts background, liver, .*pancreas but a.safetensors"):
        Ensemble([Predictor(model, card, device="cpu"), Predictor(model, other, device="cpu")],
                 ["a.safetensors", "b.safetensors"])


def test_predict_takes_several_checkpoints(checkpoint, network, tmp_path):
    model, card = network
    coronal = tmp_path / "coronal.safetensors"
    save_checkpoint(coronal, model, in_plane(card, "coronal"))
    volume = scan()
    io.write_volume(tmp_path / "scan.nii.gz", volume.array, volume)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "mask.nii.gz"),
                                      "-c", str(checkpoint), "-c", str(coronal), "--backend", "torch"])
    assert result.exit_code == 0, result.output
    assert "ensemble of 2 models" in result.stderr
    members = [Predictor(model, in_plane(card, p), device="cpu") for p in ("axial", "coronal")]
    expected = Ensemble(members).predict_volume(io.read_volume(tmp_path / "scan.nii.gz")).labels
    assert np.mean(io.read_volume(tmp_path / "mask.nii.gz").array == expected) >= 0.999
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, model, card.with_classes(["background", "a", "b", "c", "d", "e"]))
    refused = CliRunner().invoke(app, ["predict", str(tmp_path / "scan.nii.gz"), "-o", str(tmp_path / "m2.nii.gz"),
                                       "-c", str(checkpoint), "-c", str(other)])
    assert refused.exit_code == 1 and "an ensemble needs the same classes" in refused.stderr


def test_members_may_run_on_different_backends(network):
    model, card = network
    alone = Predictor(model, card, device="cpu").predict_volume(scan(), probabilities=True).probabilities
    mixed = Ensemble([Predictor(model, card, device="cpu"),
                      Predictor(model, card, device="cpu", backend="onnxruntime")])
    got = mixed.predict_volume(scan(), probabilities=True).probabilities
    np.testing.assert_allclose(got.astype(np.float32), alone.astype(np.float32), atol=2e-3)
