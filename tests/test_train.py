"""Training: the published loss and schedule, configuration, resumable state, the train command."""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from shared_files import GOLDEN, needs_shared
from typer.testing import CliRunner

from swinseg import io
from swinseg.cli import app
from swinseg.errors import SwinsegError
from swinseg.phantom import write_phantom_dataset
from swinseg.training.loop import TrainConfig, resolve_config, train
from swinseg.training.losses import DiceCELoss, soft_dice_loss
from swinseg.training.setup import build_network, poly_schedule, starting_point
from swinseg.training.state import capture_rng_state, load_training_state, restore_rng_state, save_training_state

CLASSIFIER = GOLDEN / "swin_classifier_small_official.pth"
TINY = dict(model="swin_unet_test", batch_size=4, val_fraction=0.34, num_workers=0, device="cpu")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    """Three 4 x 64 x 64 phantom CTs in nnU-Net layout: two train cases (8 slices), one validation case."""
    return write_phantom_dataset(tmp_path_factory.mktemp("data") / "ds", 3, seed=0, shape=(4, 64, 64),
                                 spacing=(10.0, 5.5, 5.5))


def reference_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """The reference DiceLoss, class by class as its code loops."""
    probs = torch.softmax(logits, dim=1)
    total = 0.0
    for c in range(logits.shape[1]):
        score, truth = probs[:, c], (target == c).float()
        intersect = torch.sum(score * truth)
        total = total + 1 - (2 * intersect + smooth) / (torch.sum(score * score) + torch.sum(truth * truth) + smooth)
    return total / logits.shape[1]


def test_loss_is_04_ce_plus_06_soft_dice_over_all_classes():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 16, 16, generator=generator)
    target = torch.randint(0, 5, (3, 16, 16), generator=generator)
    expected = 0.4 * F.cross_entropy(logits, target) + 0.6 * reference_dice_loss(logits, target)
    assert torch.allclose(DiceCELoss()(logits, target), expected, atol=1e-6)
    perfect = F.one_hot(target, 5).permute(0, 3, 1, 2).float() * 100
    assert soft_dice_loss(perfect, target) < 1e-6
    assert soft_dice_loss(logits.half(), target).dtype == torch.float32


def test_poly_schedule_per_iteration_reaches_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.05)
    scheduler = poly_schedule(optimizer, max_iterations=10, power=0.9)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == 0.05
    assert np.allclose(lrs, [0.05 * (1 - i / 10) ** 0.9 for i in range(10)])
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_published_recipe_is_the_paper_and_lr_scales_with_batch():
    config = TrainConfig(recipe="published")
    assert (config.epochs, config.batch_size, config.seed) == (150, None, 1234)  # the batch: the plan's
    assert dataclasses.replace(config, batch_size=24).learning_rate == 0.05  # the plan's for this recipe
    with pytest.raises(ValueError, match="plan"):
        _ = config.learning_rate  # no batch yet: no learning rate to scale
    assert (config.optimizer, config.momentum, config.weight_decay, config.poly_power) == ("sgd", 0.9, 1e-4, 0.9)
    assert (config.ce_weight, config.dice_weight, config.augment, config.warmup) == (0.4, 0.6, "reference", 0.0)
    assert TrainConfig(recipe="published", batch_size=12).learning_rate == pytest.approx(0.025)
    assert TrainConfig(batch_size=12, lr=0.01).learning_rate == 0.01
    assert TrainConfig(pretrained="swin_tiny.pth").recipe == "published"  # ImageNet weights: the paper's recipe
    finetune = resolve_config(finetune=True)
    assert (finetune.epochs, finetune.model, finetune.recipe) == (50, None, "published")
    assert dataclasses.replace(finetune, batch_size=24).learning_rate == 0.01


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("epochs: 3\nweight_decay: 1e-4\nclasses: [background, liver]\nbatch_size: 6\n"
                    "recipe: published\n")
    config = resolve_config(path, {"epochs": 5, "seed": None})
    assert (config.epochs, config.weight_decay, config.batch_size) == (5, 1e-4, 6)
    assert config.classes == ["background", "liver"]
    assert config.learning_rate == pytest.approx(0.0125)
    path.write_text("epoch: 3\n")
    with pytest.raises(SwinsegError, match=r"recipe.yaml: unknown keys \['epoch'\]"):
        resolve_config(path)
    with pytest.raises(SwinsegError, match="'epochs'"):
        resolve_config(None, {"epochs": "many"})
    with pytest.raises(SwinsegError, match="--batch-size must be at least 1"):
        TrainConfig(batch_size=0)


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    import random

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    save_training_state(tmp_path / "state.pt", {"rng": [capture_rng_state()], "epoch": 1})
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng_state(load_training_state(tmp_path / "state.pt")["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_interrupted_save_keeps_the_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_training_state(path, {"epoch": 1})

    def crash(obj, file, *args, **kwargs):
        Path(file).write_bytes(b"half a state")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_training_state(path, {"epoch": 2})
    assert load_training_state(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    path.write_bytes(b"garbage")
    with pytest.raises(SwinsegError, match="last.pt: not a readable swinseg training state"):
        load_training_state(path)


def test_resume_gives_bit_identical_weights(phantoms, tmp_path):
    """2 epochs straight (with 2 loader workers) == 1 epoch, stop, resume, 1 more (in-process loading)."""
    straight = train(TrainConfig(data=str(phantoms), output=str(tmp_path / "a"), epochs=2, val_every=0,
                                 **dict(TINY, num_workers=2)))
    first = train(TrainConfig(data=str(phantoms), output=str(tmp_path / "b"), epochs=2, val_every=0, **TINY),
                  stop_after=1)
    assert len(first.history) == 1 and not (tmp_path / "b" / "final.safetensors").exists()
    torch.manual_seed(999)  # whatever the process did meanwhile must not matter
    resumed = train(resolve_config(tmp_path / "b" / "config.yaml"), resume=True)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert [row["loss"] for row in straight.history] == [row["loss"] for row in resumed.history]
    assert straight.history[1]["iteration"] == 4
    with pytest.raises(SwinsegError, match="already holds a training run; continue it with --resume"):
        train(TrainConfig(data=str(phantoms), output=str(tmp_path / "b"), epochs=1, **TINY))


def test_a_run_resumed_from_a_config_without_a_batch_keeps_its_planned_batch(phantoms, tmp_path):
    """Library callers pass the same config again: the batch comes from the run, not from a new plan."""
    unplanned = {key: value for key, value in TINY.items() if key != "batch_size"}
    options = dict(data=str(phantoms), output=str(tmp_path / "run"), epochs=2, val_every=0, **unplanned)
    first = train(TrainConfig(**options), stop_after=1)
    planned = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["batch_size"]
    assert len(first.history) == 1 and planned is not None
    resumed = train(TrainConfig(**options), resume=True)
    assert len(resumed.history) == 2
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["batch_size"] == planned


def test_train_command_writes_a_predict_ready_run(phantoms, tmp_path):
    from swinseg.predict import Predictor
    from swinseg.weights import load_checkpoint

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(dict(TINY, epochs=5, val_every=1)))
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(phantoms), "--config", str(recipe), "--epochs", "2",
                                      "-o", str(run)])
    assert result.exit_code == 0, result.output
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "slices/s" in epoch_lines[0] and "val Dice" in epoch_lines[1]
    assert "\x1b[" not in result.stdout  # no progress-bar escapes without a terminal

    assert yaml.safe_load((run / "config.yaml").read_text())["epochs"] == 2  # flag beat the file
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,iteration,loss,lr") and "dice_aorta" in rows[0] and len(rows) == 3
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, card = load_checkpoint(run / "best.safetensors")
    assert card.classes == ("background", "liver", "spleen", "kidney_left", "kidney_right", "aorta")
    assert card.preprocessing.spacing == (5.5, 5.5)  # --spacing auto: the phantoms' median, kept in the checkpoint
    slices = np.zeros((2, 80, 70), np.float32)
    labels = Predictor(model, card, device="cpu").predict_slices(slices, spacing=(4.0, 6.0)).labels
    assert labels.shape == (2, 80, 70)
    state = load_training_state(run / "last.pt")
    assert state["epoch"] == 2 and state["scheduler"]["last_epoch"] == 4 and len(state["history"]) == 2

    again = CliRunner().invoke(app, ["train", "--resume", str(run), "--epochs", "3", "--val-every", "0"])
    assert again.exit_code == 0, again.output
    assert "resuming" in again.stdout and "epoch 3/3" in again.stdout and "epoch 2/" not in again.stdout
    assert len((run / "metrics.csv").read_text().splitlines()) == 4
    refused = CliRunner().invoke(app, ["train", "--data", str(phantoms), "-o", str(run)])
    assert refused.exit_code == 1 and "already holds a training run" in refused.output


@needs_shared
def test_pretrained_initialises_encoder_and_decoder(tmp_path):
    card = tmp_path / "small.yaml"
    card.write_text(yaml.safe_dump({"name": "small", "classes": ["background", "liver"], "network": {
        "img_size": 224, "embed_dim": 24, "depths": [2, 2, 2, 2], "num_heads": [1, 2, 4, 8], "window_size": 7}}))
    config = TrainConfig(model=str(card), pretrained=str(CLASSIFIER))
    lines: list[str] = []
    model, _ = build_network(config, *starting_point(config), ("background", "liver"), lines.append)
    classifier = torch.load(CLASSIFIER, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(model.patch_embed.proj.weight, classifier["patch_embed.proj.weight"])
    assert torch.equal(model.layers_up[3].blocks[0].mlp.fc1.weight, classifier["layers.0.blocks.0.mlp.fc1.weight"])
    assert "92.4% of parameter values" in lines[0]


@pytest.mark.slow
def test_a_run_killed_at_any_moment_resumes(phantoms, tmp_path):
    """SIGKILL a training process at a random moment after its first epoch: last.pt loads, resume finishes."""
    run = tmp_path / "run"
    config = TrainConfig(data=str(phantoms), output=str(run), epochs=40, val_every=0, **TINY)
    context = multiprocessing.get_context("fork")  # the child inherits the imports: starts at once
    child = context.Process(target=train, args=(config,), daemon=True)
    child.start()
    deadline = time.monotonic() + 60
    while not (run / "last.pt").exists() and child.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(random.Random().uniform(0.0, 1.0))  # anywhere in an epoch or inside a save
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert child.exitcode == -signal.SIGKILL, "the run ended before it was killed"
    done = load_training_state(run / "last.pt")["epoch"]
    assert 1 <= done < 40
    resumed = train(resolve_config(run / "config.yaml", {"epochs": done + 1}), resume=True)
    assert len(resumed.history) == done + 1 and (run / "final.safetensors").is_file()
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]  # half-written files were cleared


@pytest.mark.slow
def test_plane_is_trained_and_recorded_so_predict_slices_the_same_way(phantoms, tmp_path):
    from swinseg.config import load_card
    from swinseg.io import read_volume
    from swinseg.predict import Predictor
    from swinseg.training.loop import open_data
    from swinseg.weights import load_checkpoint

    run = tmp_path / "run"
    config = TrainConfig(data=str(phantoms), output=str(run), epochs=1, val_every=0, plane="coronal", **TINY)
    assert len(open_data(config, load_card("swin_unet_test")).slices) == 2 * 64  # two cases, 64 coronal slices each
    train(config)
    model, card = load_checkpoint(run / "final.safetensors")
    assert card.preprocessing.plane == "coronal"
    scan = read_volume(next((phantoms / "imagesTr").iterdir()))
    prepared = Predictor(model, card, device="cpu").prepare(scan)
    oriented = io.to_orientation(scan, card.preprocessing.orientation)[0]
    assert prepared.slices.shape == (oriented.shape[1], oriented.shape[0], oriented.shape[2])  # (A-P, ...) first
    with pytest.raises(SwinsegError, match="--plane 'oblique'"):
        TrainConfig(data=str(phantoms), plane="oblique")


def test_cross_validation_folds_are_seeded_disjoint_and_written_to_the_run(phantoms, tmp_path):
    import json

    from swinseg.training.datasets import fold_splits
    from swinseg.training.folds import hold_out_fold

    names = [f"case_{k}" for k in range(7)]
    splits = fold_splits(names, 3, seed=5)
    assert splits == fold_splits(list(reversed(names)), 3, seed=5)  # reproducible, whatever the listing order
    assert sorted(n for fold in splits for n in fold["val"]) == names  # every case validated exactly once
    assert all(set(f["train"]) == set(names) - set(f["val"]) for f in splits)
    assert fold_splits(names, 3, seed=6) != splits
    with pytest.raises(SwinsegError, match="--folds 8"):
        fold_splits(names, 8)

    config = TrainConfig(data=str(phantoms), output=str(tmp_path / "run"), folds=3, fold=2, **TINY)
    held = hold_out_fold(config, tmp_path / "run")
    written = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert len(written) == 3 and held.val_cases == written[2]["val"]
    again = hold_out_fold(TrainConfig(data=str(phantoms), splits=str(tmp_path / "run" / "splits.json"), fold=1,
                                      **TINY), tmp_path / "other")
    assert again.val_cases == written[1]["val"]
    (tmp_path / "bad.json").write_text(json.dumps([{"train": ["nope"], "val": written[0]["val"]}]))
    with pytest.raises(SwinsegError, match="unknown cases"):
        hold_out_fold(TrainConfig(data=str(phantoms), splits=str(tmp_path / "bad.json"), **TINY), tmp_path / "x")
    with pytest.raises(SwinsegError, match="--fold 3"):
        hold_out_fold(TrainConfig(data=str(phantoms), folds=3, fold=3, **TINY), tmp_path / "y")
    with pytest.raises(SwinsegError, match="give one"):
        TrainConfig(data=str(phantoms), folds=3, val_cases=["a"])

    run = tmp_path / "cli"
    result = CliRunner().invoke(app, ["train", "--data", str(phantoms), "-o", str(run), "--folds", "3", "--fold", "1",
                                      "--epochs", "1", "--val-every", "1", "--batch-size", "4", "--num-workers", "0",
                                      "--model", "swin_unet_test", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    fold = json.loads((run / "splits.json").read_text())[1]
    assert yaml.safe_load((run / "config.yaml").read_text())["val_cases"] == fold["val"]


def test_validation_split_errors_name_the_train_options(phantoms, tmp_path):
    unknown = CliRunner().invoke(app, ["train", "--data", str(phantoms), "-o", str(tmp_path / "a"),
                                       "--model", "swin_unet_test", "--val-cases", "nope", "--device", "cpu"])
    assert unknown.exit_code == 1 and "--val-cases: unknown cases nope" in unknown.output
    whole = CliRunner().invoke(app, ["train", "--data", str(phantoms), "-o", str(tmp_path / "b"),
                                     "--model", "swin_unet_test", "--val-fraction", "1.0", "--device", "cpu"])
    assert whole.exit_code == 1 and "--val-fraction must be in [0, 1)" in whole.output


@pytest.mark.slow
def test_workers_default_to_the_cores_granted_and_torch_advice_stays_off_the_terminal(phantoms, tmp_path):
    from swinseg.defaults import usable_cores

    assert TrainConfig().num_workers == min(8, usable_cores()) <= (os.cpu_count() or 1)
    script = ("import os, sys; os.sched_setaffinity(0, {0}); from swinseg.training.loop import TrainConfig, train; "
              f"train(TrainConfig(data={str(phantoms)!r}, output={str(tmp_path / 'run')!r}, model='swin_unet_test', "
              "epochs=1, batch_size=4, val_every=0, num_workers=2, device='cpu'))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "This DataLoader will create" not in result.stderr
