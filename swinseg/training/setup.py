"""What a run starts from: the network (a new one, a checkpoint to finetune, ImageNet Swin-T weights, new
classes), the optimiser of the recipe and the learning-rate schedule."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from swinseg.config import ModelCard, load_card
from swinseg.errors import SwinsegError
from swinseg.training.options import TrainConfig

if TYPE_CHECKING:
    from swinseg.model import SwinUnet


def adapt_classes(model: SwinUnet, old: tuple[str, ...], new: tuple[str, ...]) -> tuple[SwinUnet, list[str]]:
    """A copy of `model` predicting the classes `new`: weights of classes present in both (by name) are kept,
    the other classes' output weights start fresh. Returns the model and the names kept."""
    from swinseg.model import SwinUnet

    if tuple(old) == tuple(new):
        return model, list(new)
    adapted = SwinUnet(dataclasses.replace(model.config, num_classes=len(new)))
    target = adapted.state_dict()
    kept = [name for name in new if name in old]
    rows_new = torch.tensor([new.index(name) for name in kept], dtype=torch.long)
    rows_old = torch.tensor([old.index(name) for name in kept], dtype=torch.long)
    per_class = {f"output.{name}" for name, _ in model.output.named_parameters()}  # rows = classes
    for key, value in model.state_dict().items():
        if key in per_class:
            target[key][rows_new] = value[rows_old]
        else:
            target[key] = value
    adapted.load_state_dict(target)
    return adapted, kept


def starting_point(config: TrainConfig) -> tuple[SwinUnet | None, ModelCard]:
    """finetune: the trained model and its card (--model names the card of a foreign checkpoint);
    train: no model yet and the card of --model."""
    from swinseg import weights

    if config.checkpoint:
        return weights.load_checkpoint(config.checkpoint, card=config.model)
    return None, load_card(config.model or "swin_unet_tiny")


def with_context(config: TrainConfig, model: SwinUnet | None, card: ModelCard) -> ModelCard:
    """The card with --context-slices applied (a fresh network's input layer follows; a trained one's cannot)."""
    wanted = config.context_slices
    if wanted is None or wanted == card.preprocessing.context_slices:
        return card
    if model is not None:
        raise SwinsegError(f"{config.checkpoint}: trained with context_slices {card.preprocessing.context_slices}; "
                           f"--context-slices {wanted} would change its input layer (train a new model instead)")
    return card.with_context(wanted)


def build_network(
    config: TrainConfig, model: SwinUnet | None, card: ModelCard, classes: tuple[str, ...],
    log: Callable[[str], None],
) -> tuple[SwinUnet, ModelCard]:
    """The network to train for `classes`: the finetuned model adapted by class name, or a fresh network
    (ImageNet-initialised with --pretrained)."""
    from swinseg import pretrained
    from swinseg.model import SwinUnet

    if model is not None:
        if classes != card.classes:
            model, kept = adapt_classes(model, card.classes, classes)
            fresh = [name for name in classes if name not in kept]
            log(f"classes: {len(kept)} kept by name ({', '.join(kept) or 'none'}), "
                f"new: {', '.join(fresh) or 'none'}")
            card = card.with_classes(classes)
        return model.train(), card
    card = card.with_classes(classes) if classes != card.classes else card
    model = SwinUnet(card.network)
    if config.pretrained:
        log(pretrained.init_from_imagenet(model, config.pretrained).summary())
    else:
        log("no --pretrained: starting from random weights (the published recipe starts from ImageNet Swin-T)")
    return model, card


def poly_schedule(optimizer: torch.optim.Optimizer, max_iterations: int, power: float,
                  warmup: float = 0.0) -> LambdaLR:
    """lr = base * (1 - it / max_it) ** power, stepped once per iteration (0 after the last one), after a linear
    warm-up from base / warm-up steps over the first `warmup` share of the iterations (none at 0)."""
    warmup_steps = int(round(warmup * max_iterations))

    def factor(it: int) -> float:
        if it < warmup_steps:
            return (it + 1) / warmup_steps
        return max(0.0, 1.0 - it / max_iterations) ** power

    return LambdaLR(optimizer, factor)


def make_optimizer(parameters: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser: SGD with momentum (published) or AdamW (scratch); norms and biases are not
    decayed by AdamW."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.learning_rate, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    decayed = [p for p in parameters if p.ndim > 1]
    kept = [p for p in parameters if p.ndim <= 1]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": kept, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate)
