"""Training recipes: published vs scratch defaults, warm-up, AdamW groups, the iteration budget, mirroring."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from swinseg.errors import SwinsegError
from swinseg.phantom import write_phantom_dataset
from swinseg.training.augment import StrongBounds, strong_sample
from swinseg.training.loop import TrainConfig, resolve_config, train
from swinseg.training.setup import make_optimizer, poly_schedule


def test_without_imagenet_weights_the_scratch_recipe_is_the_default_and_flags_win():
    config = TrainConfig()
    assert (config.recipe, config.optimizer, config.base_lr, config.weight_decay) == ("scratch", "adamw", 1e-3, 0.01)
    assert config.warmup > 0 and (config.augment, config.rotation, config.dice_background) == ("strong", 15.0, True)
    assert TrainConfig(checkpoint="trained.safetensors").recipe == "published"
    given = TrainConfig(recipe="scratch", base_lr=3e-4, optimizer="SGD")
    assert (given.base_lr, given.optimizer, given.weight_decay) == (3e-4, "sgd", 0.01)
    with pytest.raises(SwinsegError, match="--recipe 'fast'"):
        TrainConfig(recipe="fast")
    with pytest.raises(SwinsegError, match="--optimizer 'adam'"):
        TrainConfig(optimizer="adam")
    with pytest.raises(SwinsegError, match="--warmup"):
        TrainConfig(warmup=1.5)
    with pytest.raises(SwinsegError, match="--iterations must be at least 1"):
        TrainConfig(iterations=0)


def test_warmup_rises_linearly_then_poly_decays_to_zero():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = poly_schedule(optimizer, max_iterations=20, power=0.9, warmup=0.2)
    lrs = []
    for _ in range(20):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert np.allclose(lrs[:4], [0.25, 0.5, 0.75, 1.0])
    assert np.allclose(lrs[4:], [(1 - i / 20) ** 0.9 for i in range(4, 20)])
    assert optimizer.param_groups[0]["lr"] == 0.0


def test_adamw_does_not_decay_norms_and_biases():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    config = TrainConfig(recipe="scratch", weight_decay=0.05, batch_size=16)
    optimizer = make_optimizer(list(model.parameters()), config)
    assert isinstance(optimizer, torch.optim.AdamW)
    decayed, kept = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and [p.shape for p in decayed["params"]] == [(4, 4)]
    assert kept["weight_decay"] == 0.0 and len(kept["params"]) == 3  # linear bias, norm weight and bias
    sgd = make_optimizer(list(model.parameters()), TrainConfig(recipe="published", batch_size=24))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["weight_decay"] == 1e-4


def _left_heavier(mirror_axes: tuple[int, ...], seed: int) -> bool:
    """Whether the labelled left half of a 32x32 slice is still on the left after a strong sample."""
    label = np.zeros((32, 32), dtype=np.uint8)
    label[:, :16] = 1
    image = label.astype(np.float32)
    _, out = strong_sample(image, label, np.random.default_rng(seed), 32, (15.5, 15.5), (1.0, 1.0),
                           StrongBounds(mirror_axes, max_rotation=0.0))
    return out[:, :16].sum() > out[:, 16:].sum()


def test_strong_augmentation_mirrors_only_the_axes_it_is_given():
    assert all(_left_heavier((0,), seed) for seed in range(40))
    assert not all(_left_heavier((0, 1), seed) for seed in range(40))


def test_an_iteration_budget_becomes_whole_epochs(tmp_path):
    data = write_phantom_dataset(tmp_path / "ds", 2, seed=0, shape=(4, 64, 64), spacing=(10.0, 5.5, 5.5))
    config = TrainConfig(data=str(data), output=str(tmp_path / "run"), model="swin_unet_test", batch_size=2,
                         val_every=0, val_fraction=0.0, num_workers=0, device="cpu", iterations=5)
    result = train(config)
    assert len(result.history) == 2  # 8 slices = 4 batches an epoch: 5 steps need 2 epochs
    assert result.history[-1]["iteration"] == 8 and result.history[-1]["lr"] == 0.0


def test_a_run_configured_before_recipes_resumes_with_the_published_one(tmp_path):
    old = {key: value for key, value in TrainConfig(recipe="published", batch_size=24).to_dict().items()
           if key not in ("recipe", "optimizer", "warmup", "rotation", "iterations")}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old), encoding="utf-8")
    config = resolve_config(path)
    assert (config.recipe, config.optimizer, config.learning_rate) == ("published", "sgd", 0.05)
    path.write_text("epochs: 3\n", encoding="utf-8")  # a hand-written config: the default recipe
    assert resolve_config(path).recipe == "scratch"


def test_mirror_flag_overrides_the_planned_axes():
    from swinseg.config import Preprocessing
    from swinseg.plan import mirror_decision

    lateral = ("background", "kidney_left", "kidney_right")
    assert mirror_decision(lateral, Preprocessing()).value == [0]
    forced = mirror_decision(lateral, Preprocessing(), "both")
    assert forced.value == [0, 1] and forced.flag == "--mirror"
    assert mirror_decision(lateral, Preprocessing(), "none").value == []
    with pytest.raises(SwinsegError, match="--mirror 'diagonal'"):
        TrainConfig(mirror="diagonal")
