"""Finetuning: classes matched by name, --freeze-encoder, finetuning defaults, reference checkpoints."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from shared_files import GOLDEN, needs_shared
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.config import load_card
from swinseg.model import SwinUnet
from swinseg.phantom import write_phantom_dataset
from swinseg.training.loop import TrainConfig
from swinseg.training.setup import adapt_classes, build_network, starting_point
from swinseg.weights import load_checkpoint, save_checkpoint

GOLDEN_UNET = GOLDEN / "swin_unet_small_official.pth"
PHANTOM_CLASSES = ("background", "liver", "spleen", "kidney_left", "kidney_right", "aorta")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("data") / "ds", 3, seed=1, shape=(4, 64, 64),
                                 spacing=(10.0, 5.5, 5.5))


def test_classes_matching_by_name_keep_their_output_weights():
    torch.manual_seed(0)
    old = ("background", "liver", "spleen", "stomach")
    model = SwinUnet(load_card("swin_unet_test").with_classes(old).network)
    new = ("background", "aorta", "spleen", "liver")
    adapted, kept = adapt_classes(model, old, new)
    assert kept == ["background", "spleen", "liver"] and adapted.config.num_classes == 4
    before, after = model.output.weight, adapted.output.weight
    for name in kept:
        assert torch.equal(after[new.index(name)], before[old.index(name)])
    assert not any(torch.equal(after[1], before[i]) for i in range(4))  # aorta starts fresh
    same = {k for k, v in model.state_dict().items() if k != "output.weight"}
    assert all(torch.equal(model.state_dict()[k], adapted.state_dict()[k]) for k in same)


def test_finetune_command_adapts_classes_and_freezes_the_encoder(phantoms, tmp_path):
    torch.manual_seed(0)
    card = load_card("swin_unet_test").with_classes(("background", "spleen", "liver", "stomach"))
    start = SwinUnet(card.network)
    save_checkpoint(tmp_path / "start.safetensors", start, card)
    run = tmp_path / "ft"
    result = CliRunner().invoke(app, [
        "finetune", "--checkpoint", str(tmp_path / "start.safetensors"), "--data", str(phantoms), "-o", str(run),
        "--freeze-encoder", "--epochs", "1", "--batch-size", "4", "--val-fraction", "0.34", "--num-workers", "0",
        "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "3 kept by name (background, liver, spleen), new: kidney_left, kidney_right, aorta" in result.stdout

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["base_lr"] == 0.01 and config["lr"] == pytest.approx(0.01 * 4 / 24)  # finetuning defaults
    tuned, tuned_card = load_checkpoint(run / "best.safetensors")
    assert tuned_card.classes == PHANTOM_CLASSES
    start_state, tuned_state = start.state_dict(), tuned.state_dict()
    encoder = {name for name, _ in start.named_parameters() if name.startswith(("patch_embed.", "layers.", "norm."))}
    assert encoder and all(torch.equal(start_state[k], tuned_state[k]) for k in encoder)
    assert not torch.equal(start_state["norm_up.weight"], tuned_state["norm_up.weight"])  # the decoder trained


def test_finetune_needs_a_checkpoint(phantoms, tmp_path):
    missing = CliRunner().invoke(app, ["finetune", "--data", str(phantoms), "-o", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "finetune needs --checkpoint" in missing.output
    assert "Traceback" not in missing.output


def test_label_names_must_cover_the_dataset(phantoms, tmp_path):
    from swinseg.errors import SwinsegError
    from swinseg.training.loop import train

    config = TrainConfig(data=str(phantoms), output=str(tmp_path / "run"), model="swin_unet_test",
                         classes=["background", "liver"], epochs=1, device="cpu", num_workers=0)
    with pytest.raises(SwinsegError, match="--classes names 2 classes but .* has 6"):
        train(config)


@needs_shared
def test_reference_checkpoint_with_a_card_is_a_starting_point():
    config = TrainConfig(checkpoint=str(GOLDEN_UNET), model="swin_unet_tiny")
    model, card = starting_point(config)
    assert card.classes[5] == "liver" and card.network.embed_dim == 24
    reference_output = model.output.weight.clone()
    adapted, new_card = build_network(config, model, card, PHANTOM_CLASSES, log=lambda text: None)
    assert new_card.classes == PHANTOM_CLASSES and adapted.training
    for i, name in enumerate(PHANTOM_CLASSES):  # every phantom class exists in Synapse, under another index
        assert torch.equal(adapted.output.weight[i], reference_output[card.classes.index(name)])
