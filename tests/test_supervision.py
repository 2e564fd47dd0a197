"""Deep supervision: heads on the decoder stages during training, never in checkpoints or prediction."""
from __future__ import annotations

import pytest
import torch

from swinseg.io import read_volume
from swinseg.model import build_model
from swinseg.phantom import write_phantom_dataset
from swinseg.predict import Predictor
from swinseg.rundir import FINAL_FILE, STATE_FILE
from swinseg.training.loop import train
from swinseg.training.losses import DiceCELoss
from swinseg.training.options import TrainConfig, resolve_config
from swinseg.training.state import load_training_state
from swinseg.training.supervision import DeepSupervision, DeepSupervisionLoss, downsampled_labels
from swinseg.weights import load_checkpoint


def test_heads_give_coarser_logits_and_leave_the_network_as_it_was():
    torch.manual_seed(0)
    network = build_model("swin_unet_test", num_classes=5).eval()
    supervised = DeepSupervision(network).eval()
    images = torch.randn(2, 3, 64, 64)
    outputs = supervised(images)
    assert [tuple(o.shape) for o in outputs] == [(2, 5, 64, 64), (2, 5, 8, 8), (2, 5, 4, 4)]
    assert torch.equal(outputs[0], network(images))  # the network alone, hooks idle: the same logits
    assert supervised._stage_outputs is None
    assert set(network.state_dict()) == {k.removeprefix("network.") for k in supervised.state_dict()
                                          if k.startswith("network.")}


def test_loss_weighs_each_coarser_level_half_and_sums_to_one():
    torch.manual_seed(0)
    base = DiceCELoss()
    loss = DeepSupervisionLoss(base, 3)
    assert loss.weights == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    labels = torch.randint(0, 4, (2, 16, 16))
    outputs = [torch.randn(2, 4, 16, 16), torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2)]
    expected = sum(w * base(o, downsampled_labels(labels, o.shape[-2:])) for w, o in zip(loss.weights, outputs))
    assert torch.allclose(loss(outputs, labels), expected)
    assert torch.equal(downsampled_labels(labels, (4, 4)), labels[:, ::4, ::4])


def test_scratch_recipe_supervises_deeply_published_and_old_runs_do_not(tmp_path):
    assert TrainConfig().deep_supervision is True
    assert TrainConfig(recipe="published").deep_supervision is False
    assert TrainConfig(deep_supervision=False).deep_supervision is False
    old_run = tmp_path / "config.yaml"  # a run's config.yaml written before deep supervision existed
    old_run.write_text("recipe: scratch\nmomentum: 0.9\npoly_power: 0.9\nbase_batch: 24\nlr: null\n")
    assert resolve_config(old_run).deep_supervision is False


@pytest.mark.slow
def test_a_deeply_supervised_run_resumes_exactly_and_saves_the_network_alone(tmp_path):
    data = write_phantom_dataset(tmp_path / "ds", 2, seed=0, shape=(4, 64, 64), spacing=(10.0, 5.5, 5.5))
    options = dict(data=str(data), epochs=2, val_every=0, model="swin_unet_test", batch_size=4, num_workers=0,
                   device="cpu", deep_supervision=True)
    straight = train(TrainConfig(output=str(tmp_path / "a"), **options))
    train(TrainConfig(output=str(tmp_path / "b"), **options), stop_after=1)
    assert "heads" in load_training_state(tmp_path / "b" / STATE_FILE)
    resumed = train(resolve_config(tmp_path / "b" / "config.yaml"), resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    model, card = load_checkpoint(tmp_path / "b" / FINAL_FILE)  # strict: no head weights in the checkpoint
    assert set(model.state_dict()) == set(a)
    scan = read_volume(data / "imagesTr" / "phantom_000_0000.nii.gz")
    assert Predictor(model, card, device="cpu").predict_volume(scan).labels.shape == scan.array.shape
