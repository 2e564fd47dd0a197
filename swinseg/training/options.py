"""Training options: the published recipe as defaults, a YAML file over them, command-line flags over both.

Every field of TrainConfig is a `swinseg train` / `swinseg finetune` flag (dashes for underscores) and a key
of the YAML `--config FILE`; the run directory gets the resolved configuration as config.yaml.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from swinseg.choices import AUGMENTATIONS, MIRRORS, PLANES
from swinseg.config import MAX_CONTEXT
from swinseg.defaults import FOREGROUND_OVERSAMPLING, SEED, usable_cores
from swinseg.errors import SwinsegError

# Finetuning starts from a trained network: a fifth of the published learning rate, a third of the epochs.
# The network, classes and preprocessing come from the checkpoint unless --model / --classes say otherwise.
ALL_FOLDS = "all"
FINETUNE_DEFAULTS: dict[str, Any] = {"model": None, "recipe": "published", "base_lr": 0.01, "epochs": 50,
                                     "val_every": 5}
# What a recipe sets for the options left unset (None). "published": the paper's, for ImageNet-initialised
# encoders; "scratch": what trains a randomly initialised Swin-Unet (README, "Training recipe").
RECIPES: dict[str, dict[str, Any]] = {
    "published": {"optimizer": "sgd", "base_lr": 0.05, "weight_decay": 1e-4, "warmup": 0.0,
                  "augment": "reference", "rotation": 180.0, "dice_background": True,
                  "deep_supervision": False},
    "scratch": {"optimizer": "adamw", "base_lr": 1e-3, "weight_decay": 0.01, "warmup": 0.05,
                "augment": "strong", "rotation": 15.0, "dice_background": True,
                "deep_supervision": True},
}
OPTIMIZERS = ("sgd", "adamw")
PRE_RECIPE_KEYS = {"momentum", "poly_power", "base_batch", "lr"}  # every run's config.yaml holds them


@dataclass
class TrainConfig:
    """Every training option; each is a `swinseg train` flag (dashes for underscores) and a YAML key."""

    data: str = ""
    output: str = ""
    model: str | None = "swin_unet_tiny"  # card: network, preprocessing, classes (finetune: the checkpoint's)
    pretrained: str | None = None  # ImageNet Swin-T weights (official or timm layout)
    checkpoint: str | None = None  # finetune: a trained swinseg model or a reference checkpoint
    classes: list[str] | None = None  # label names, index = label value; default: the dataset's, else the card's
    freeze_encoder: bool = False
    recipe: str | None = None  # published | scratch; default: published with --pretrained or --checkpoint
    epochs: int = 150
    iterations: int | None = None  # optimiser steps instead of --epochs (rounded up to whole epochs)
    batch_size: int | None = None  # global, split across torchrun processes; default: the plan's (swinseg.plan)
    optimizer: str | None = None  # sgd | adamw; default: the recipe's
    base_lr: float | None = None  # default: the recipe's
    base_batch: int = 24
    lr: float | None = None  # default base_lr * batch_size / base_batch
    momentum: float = 0.9  # SGD only
    weight_decay: float | None = None  # default: the recipe's
    warmup: float | None = None  # share of the iterations with a linear warm-up; default: the recipe's
    poly_power: float = 0.9
    ce_weight: float = 0.4
    dice_weight: float = 0.6
    dice_background: bool | None = None  # background in the soft Dice (published) or not (nnU-Net); the recipe's
    deep_supervision: bool | None = None  # losses at the coarser decoder stages too (nnU-Net's); the recipe's
    augment: str | None = None  # reference | strong (nnU-Net's) | none; YAML true/false: reference/none
    rotation: float | None = None  # strong augmentation: largest rotation in degrees; default: the recipe's
    class_shift: float = 0.0  # strong augmentation: largest per-class intensity shift, a share of [0, 1]
    mirror: str | None = None  # strong augmentation's mirror axes: auto (planned) | both | rows | columns | none
    context_slices: int | None = None  # 2.5-D: neighbours on either side fed as channels; default: the card's (0)
    spacing: str | None = None  # auto | none | SY,SX mm; default: the card's if it names one, else auto
    plane: str | None = None  # axial | coronal | sagittal training slices; default: the card's (axial)
    oversample_foreground: float = FOREGROUND_OVERSAMPLING  # crops centred on a foreground voxel (target spacing)
    seed: int = SEED
    val_every: int = 10  # epochs; 0 disables validation
    val_fraction: float = 0.2  # nnU-Net layout: share of the cases held out (Synapse: the test_vol volumes)
    val_cases: list[str] | None = None  # held-out cases by name instead
    folds: int | None = None  # cross-validation: split the cases into this many folds (nnU-Net layout)
    fold: str = "0"  # the fold held out for validation (with --folds or --splits), or "all": every fold in turn
    splits: str | None = None  # a splits.json to take the folds from (nnU-Net's format)
    val_batch_size: int = 16
    num_workers: int = dataclasses.field(default_factory=lambda: min(8, usable_cores()))  # per process
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(TrainConfig)
        for field in dataclasses.fields(self):
            setattr(self, field.name, _coerce(field.name, getattr(self, field.name), hints[field.name]))
        self._apply_recipe()
        positive = ("epochs", "batch_size", "base_batch", "val_batch_size", "iterations")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise SwinsegError(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= self.oversample_foreground <= 1.0:
            raise SwinsegError(f"--oversample-foreground must be in [0, 1], got {self.oversample_foreground}")
        if not 0.0 <= self.class_shift <= 1.0:
            raise SwinsegError(f"--class-shift must be in [0, 1] (a share of the normalised range), got "
                               f"{self.class_shift}")
        for name in ("val_every", "val_fraction", "num_workers", "weight_decay", "momentum"):
            if getattr(self, name) < 0:
                raise SwinsegError(f"--{_flag(name)} must not be negative, got {getattr(self, name)}")
        if self.plane is not None and self.plane.lower() not in PLANES:
            raise SwinsegError(f"--plane {self.plane!r}: expected one of {', '.join(PLANES)}")
        if (self.folds is not None or self.splits is not None) and self.val_cases is not None:
            raise SwinsegError("--val-cases and --folds/--splits both choose the validation cases; give one")
        self.augment = self.augment.lower()
        if self.augment in ("true", "false", "yes", "no"):  # configs of swinseg 0.1: augment true/false
            self.augment = "reference" if self.augment in ("true", "yes") else "none"
        if self.augment not in AUGMENTATIONS:
            raise SwinsegError(f"--augment {self.augment!r}: expected one of {', '.join(AUGMENTATIONS)}")
        if self.class_shift and self.augment != "strong":
            raise SwinsegError(f"--class-shift is part of the strong augmentation; --augment is {self.augment}")
        if self.mirror is not None:
            self.mirror = self.mirror.lower()
            if self.mirror not in MIRRORS:
                raise SwinsegError(f"--mirror {self.mirror!r}: expected one of {', '.join(MIRRORS)}")
        if self.context_slices is not None and not 0 <= self.context_slices <= MAX_CONTEXT:
            raise SwinsegError(f"--context-slices must be 0-{MAX_CONTEXT}, got {self.context_slices}")
        self.fold = self.fold.strip().lower()
        if self.fold != ALL_FOLDS and not self.fold.isdigit():
            raise SwinsegError(f"--fold {self.fold!r}: expected a fold number (0, 1, ...) or all")
        if self.fold == ALL_FOLDS and self.folds is None and self.splits is None:
            raise SwinsegError("--fold all needs --folds N or --splits FILE")
        rate = self.lr if self.lr is not None else self.base_lr
        if rate <= 0:
            raise SwinsegError(f"learning rate must be positive, got {rate}")

    def _apply_recipe(self) -> None:
        """Name the recipe (published when starting from ImageNet or a trained model, else scratch) and fill
        the options it sets that were left unset."""
        if self.recipe is None:
            self.recipe = "published" if self.pretrained or self.checkpoint else "scratch"
        self.recipe = self.recipe.strip().lower()
        if self.recipe not in RECIPES:
            raise SwinsegError(f"--recipe {self.recipe!r}: expected one of {', '.join(RECIPES)}")
        for name, value in RECIPES[self.recipe].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.optimizer = self.optimizer.lower()
        if self.optimizer not in OPTIMIZERS:
            raise SwinsegError(f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if not 0.0 <= self.warmup < 1.0:
            raise SwinsegError(f"--warmup must be in [0, 1), got {self.warmup}")

    @property
    def fold_index(self) -> int:
        """The held-out fold as a number (not for --fold all)."""
        if self.fold == ALL_FOLDS:
            raise SwinsegError("--fold all runs every fold; this step needs one fold number")
        return int(self.fold)

    @property
    def learning_rate(self) -> float:
        """`lr` if set, else the base learning rate scaled linearly with the batch size (once planned)."""
        if self.lr is not None:
            return self.lr
        if self.batch_size is None:
            raise ValueError("the learning rate follows the batch size, which the plan has not set yet")
        return self.base_lr * (self.batch_size / self.base_batch)

    def to_dict(self) -> dict[str, Any]:
        """The fields, with `lr` resolved where the batch size is known (else left to the plan)."""
        values = dataclasses.asdict(self)
        values["lr"] = self.learning_rate if self.lr is not None or self.batch_size is not None else None
        return values


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """A YAML / CLI value converted to the field's type (YAML reads 1e-4 as a string, for instance)."""
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args:
            return None
        raise SwinsegError(f"config key {name!r} must not be empty")
    base = next((a for a in args if a is not type(None)), hint)
    try:
        if typing.get_origin(base) is list:
            from swinseg.labels import split_list  # numpy: not at CLI start-up

            return split_list(value)
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise ValueError(value)
                return value.lower() in ("true", "yes", "1")
            return bool(value)
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as error:
        kind = getattr(base, "__name__", base)
        raise SwinsegError(f"config key {name!r}: {value!r} is not a valid {kind}") from error


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The keys of a YAML training config (unknown keys are an error naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise SwinsegError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SwinsegError(f"{path}: not a valid YAML file ({type(error).__name__})") from error
    if not isinstance(values, dict):
        raise SwinsegError(f"{path}: a training config must be a YAML mapping of option: value")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise SwinsegError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    return values


def resolve_config(
    config_file: str | Path | None = None, overrides: dict[str, Any] | None = None, *, finetune: bool = False
) -> TrainConfig:
    """Defaults (the published recipe, or FINETUNE_DEFAULTS), then the YAML file, then `overrides` (the
    flags given on the command line; None values are ignored)."""
    values: dict[str, Any] = dict(FINETUNE_DEFAULTS) if finetune else {}
    if config_file is not None:
        read = read_config_file(config_file)
        if PRE_RECIPE_KEYS <= set(read):  # a run's config.yaml: one from before recipes / deep supervision
            read.setdefault("recipe", "published")
            read.setdefault("deep_supervision", False)
        values.update(read)
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig(**values)


def write_config(config: TrainConfig, path: Path) -> None:
    from swinseg.io import atomic_output  # SimpleITK: not at CLI start-up

    with atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
