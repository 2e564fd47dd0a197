"""Training and finetuning: the published Swin-Unet recipe, resumable, on one CPU or many GPUs.

`train(config)` runs the loop: 0.4 CE + 0.6 soft Dice, SGD (momentum 0.9, weight decay 1e-4), learning rate
0.05 at batch 24 scaled linearly with the batch and decayed per iteration by (1 - it / max_it)^0.9, the
reference augmentation, seed 1234. Each epoch it writes atomically, in the run directory:

- `last.pt`: the full training state (model, optimiser, scheduler, GradScaler, epoch, iteration, the RNG
  states of every process, the metrics so far), which `resume=True` continues from bit-identically;
- `metrics.csv` and `curves.png`: loss, learning rate, slices/s and validation Dice per class;
- `best.safetensors`: the best model on validation (a predict-ready swinseg checkpoint);
- at the end `final.safetensors`: the model after the last epoch (also `best` when nothing was validated).

Validation every `val_every` epochs runs the held-out volumes through `swinseg.predict.Predictor` (the slice
inference of `swinseg predict`) and scores 3-D Dice per class. Under `torchrun` the loop uses
DistributedDataParallel (nccl on CUDA, gloo on CPU); `batch_size` is the global batch, split across the
processes, validation cases are split too, and only rank 0 writes or prints.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
import yaml
from rich.console import Console
from torch import nn

from swinseg.config import ModelCard, load_card
from swinseg.device import autocast, resolve_device, resolve_precision
from swinseg.errors import SwinsegError
from swinseg.io import atomic_output
from swinseg.losses import DiceCELoss
from swinseg.train_state import capture_rng_state, load_training_state, restore_rng_state, save_training_state

if TYPE_CHECKING:
    from swinseg.data import TrainingData, VolumeCase
    from swinseg.model import SwinUnet

STATE_FILE = "last.pt"
CONFIG_FILE = "config.yaml"
BEST_FILE = "best.safetensors"
FINAL_FILE = "final.safetensors"
METRICS_FILE = "metrics.csv"
CURVES_FILE = "curves.png"

# Finetuning starts from a trained network: a fifth of the published learning rate, a third of the epochs.
# The network, classes and preprocessing come from the checkpoint unless --model / --classes say otherwise.
FINETUNE_DEFAULTS: dict[str, Any] = {"model": None, "base_lr": 0.01, "epochs": 50, "val_every": 5}


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
    epochs: int = 150
    batch_size: int = 24  # global: split across torchrun processes
    base_lr: float = 0.05
    base_batch: int = 24
    lr: float | None = None  # default base_lr * batch_size / base_batch
    momentum: float = 0.9
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    ce_weight: float = 0.4
    dice_weight: float = 0.6
    augment: bool = True
    seed: int = 1234
    val_every: int = 10  # epochs; 0 disables validation
    val_fraction: float = 0.2  # nnU-Net layout: share of the cases held out (Synapse: the test_vol volumes)
    val_cases: list[str] | None = None  # held-out cases by name instead
    val_batch_size: int = 16
    num_workers: int = 4
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(TrainConfig)
        for field in dataclasses.fields(self):
            setattr(self, field.name, _coerce(field.name, getattr(self, field.name), hints[field.name]))
        positive = ("epochs", "batch_size", "base_batch", "val_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise SwinsegError(f"--{_flag(name)} must be at least 1, got {getattr(self, name)}")
        for name in ("val_every", "val_fraction", "num_workers", "weight_decay", "momentum"):
            if getattr(self, name) < 0:
                raise SwinsegError(f"--{_flag(name)} must not be negative, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise SwinsegError(f"learning rate must be positive, got {self.learning_rate}")

    @property
    def learning_rate(self) -> float:
        """`lr` if set, else the base learning rate scaled linearly with the batch size."""
        return self.lr if self.lr is not None else self.base_lr * (self.batch_size / self.base_batch)

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["lr"] = self.learning_rate
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
            items = value.split(",") if isinstance(value, str) else list(value)
            return [str(item).strip() for item in items if str(item).strip()]
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
    except (TypeError, ValueError):
        raise SwinsegError(f"config key {name!r}: {value!r} is not a valid {getattr(base, '__name__', base)}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The keys of a YAML training config (unknown keys are an error naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise SwinsegError(f"{path}: config file not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SwinsegError(f"{path}: not a valid YAML file ({type(error).__name__})") from None
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
        values.update(read_config_file(config_file))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return TrainConfig(**values)


def write_config(config: TrainConfig, path: Path) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))


# ------------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()

    def all_gather(self, value: Any) -> list[Any]:
        """`value` from every process, in rank order (pickled; for small things)."""
        if not self.enabled:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        torch_dist.all_gather_object(gathered, value)
        return gathered

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()


def init_distributed(device_spec: str) -> tuple[Distributed, torch.device]:
    """Join the torchrun job described by the environment (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(), resolve_device(device_spec)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank), device


# ------------------------------------------------------------------------------------------------- model


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


def build_network(
    config: TrainConfig, model: SwinUnet | None, card: ModelCard, classes: tuple[str, ...], log: Callable[[str], None]
) -> tuple[SwinUnet, ModelCard]:
    """The network to train for `classes`: the finetuned model adapted by class name, or a fresh network
    (ImageNet-initialised with --pretrained)."""
    from swinseg import weights
    from swinseg.model import SwinUnet

    if model is not None:
        if classes != card.classes:
            model, kept = adapt_classes(model, card.classes, classes)
            fresh = [name for name in classes if name not in kept]
            log(f"classes: {len(kept)} kept by name ({', '.join(kept) or 'none'}), new: {', '.join(fresh) or 'none'}")
            card = card.with_classes(classes)
        return model.train(), card
    card = card.with_classes(classes) if classes != card.classes else card
    model = SwinUnet(card.network)
    if config.pretrained:
        log(weights.init_from_imagenet(model, config.pretrained).summary())
    else:
        log("no --pretrained: starting from random weights (the published recipe starts from ImageNet Swin-T)")
    return model, card


def poly_schedule(optimizer: torch.optim.Optimizer, max_iterations: int, power: float) -> torch.optim.lr_scheduler.LambdaLR:
    """lr = base * (1 - it / max_it) ** power, stepped once per iteration (0 after the last one)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: max(0.0, 1.0 - it / max_iterations) ** power
    )


# -------------------------------------------------------------------------------------------------- data


def open_data(config: TrainConfig, card: ModelCard) -> TrainingData:
    """The dataset folder (Synapse or nnU-Net layout) opened through swinseg.data for this card."""
    from swinseg.data import open_training_data

    return open_training_data(
        config.data, img_size=card.network.img_size, preprocessing=card.preprocessing, augment=config.augment,
        seed=config.seed, validation_fraction=config.val_fraction, validation_cases=config.val_cases,
    )


def epoch_loader(data: TrainingData, config: TrainConfig, dist: Distributed, epoch: int, device: torch.device) -> torch.utils.data.DataLoader:
    """The loader of one epoch. Shuffling (seed, epoch) and augmentation (seed, epoch, slice index) depend on
    nothing that ran before, so a resumed run draws exactly the batches of an uninterrupted one, with any
    number of workers."""
    sampler = torch.utils.data.DistributedSampler(
        data.slices, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=config.seed
    )
    sampler.set_epoch(epoch)
    data.slices.set_epoch(epoch)
    return torch.utils.data.DataLoader(
        data.slices, batch_size=config.batch_size // dist.world_size, sampler=sampler,
        num_workers=config.num_workers, pin_memory=device.type == "cuda", persistent_workers=False,
    )


def _mix_seed(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _seed_process(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------- validation


def validate(
    model: SwinUnet, card: ModelCard, cases: Sequence[VolumeCase], config: TrainConfig, device: torch.device, dist: Distributed
) -> dict[str, float]:
    """Mean 3-D Dice per foreground class over `cases`, each predicted slice by slice exactly as `swinseg
    predict` does. Cases are split across processes; every process gets the same result."""
    from swinseg.metrics import dice
    from swinseg.predict import Predictor

    was_training = model.training
    predictor = Predictor(model, card, device=device, batch_size=config.val_batch_size, precision=config.precision)
    scores = []
    for index in range(dist.rank, len(cases), dist.world_size):
        case = cases[index]
        prediction = predictor.predict_slices(case.image)
        scores.append([dice(prediction == c, case.label == c) for c in range(1, len(card.classes))])
    model.train(was_training)
    everything = [row for rows in dist.all_gather(scores) for row in rows]
    means = np.mean(np.asarray(everything, dtype=np.float64), axis=0)
    return {name: float(value) for name, value in zip(card.classes[1:], means)}


# ------------------------------------------------------------------------------------------------ output


def metrics_columns(classes: tuple[str, ...]) -> list[str]:
    return ["epoch", "iteration", "loss", "lr", "slices_per_s", "seconds", "val_dice"] + [f"dice_{c}" for c in classes[1:]]


def write_metrics(path: Path, history: list[dict[str, Any]], classes: tuple[str, ...]) -> None:
    """metrics.csv from the history (rewritten whole, atomically, so it always matches last.pt)."""
    columns = metrics_columns(classes)
    lines = [",".join(columns)]
    for row in history:
        lines.append(",".join(_csv_value(row.get(column)) for column in columns))
    with atomic_output(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def _csv_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def plot_curves(path: Path, history: list[dict[str, Any]], classes: tuple[str, ...]) -> None:
    """curves.png: training loss, learning rate and validation Dice per class against the epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    axes[0].plot(epochs, [row["loss"] for row in history], color="tab:blue")
    axes[0].set(title="training loss (0.4 CE + 0.6 Dice)", xlabel="epoch", ylabel="loss")
    axes[1].plot(epochs, [row["lr"] for row in history], color="tab:orange")
    axes[1].set(title="learning rate (end of epoch)", xlabel="epoch", ylabel="lr")
    validated = [row for row in history if row.get("val_dice") is not None]
    if validated:
        val_epochs = [row["epoch"] for row in validated]
        for name in classes[1:]:
            axes[2].plot(val_epochs, [row[f"dice_{name}"] for row in validated], marker=".", label=name)
        axes[2].plot(val_epochs, [row["val_dice"] for row in validated], color="black", linewidth=2, label="mean")
        axes[2].legend(fontsize="small", ncol=2)
        axes[2].set_ylim(0, 1)
    else:
        axes[2].text(0.5, 0.5, "no validation yet", ha="center", va="center", transform=axes[2].transAxes)
    axes[2].set(title="validation Dice (3-D, per class)", xlabel="epoch", ylabel="Dice")
    for axis in axes:
        axis.grid(alpha=0.3)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


class EpochProgress:
    """A rich progress bar per epoch (loss, lr, slices/s, ETA) on a terminal; otherwise one line per epoch."""

    def __init__(self, console: Console | None) -> None:
        self.console = console
        self.live = console is not None and console.is_terminal
        self._progress: Any = None
        self._task: Any = None

    def start(self, epoch: int, epochs: int, batches: int) -> None:
        if not self.live:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=batches, info="")

    def update(self, done: int, loss: float, lr: float, slices_per_s: float) -> None:
        if self._progress is not None:
            info = f"loss {loss:.4f}  lr {lr:.2e}  {slices_per_s:.1f} slices/s"
            self._progress.update(self._task, completed=done, info=info)

    def finish(self, line: str) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self.console is not None:
            self.console.print(line, highlight=False, markup=False, soft_wrap=True)


# -------------------------------------------------------------------------------------------------- loop


@dataclass
class TrainResult:
    """What a finished run leaves: the (unwrapped) model, its card, the history and the run directory."""

    model: SwinUnet
    card: ModelCard
    history: list[dict[str, Any]]
    run_dir: Path
    best_dice: float | None


def train(
    config: TrainConfig, *, resume: bool = False, console: Console | None = None, stop_after: int | None = None
) -> TrainResult:
    """Train (or finetune, when `config.checkpoint` is set) into `config.output`; see the module docstring.

    `stop_after`: end this call after that epoch, leaving a state that `resume=True` continues (for jobs
    under a wall-time limit); the schedule stays the one of `config.epochs`.
    """
    run_dir = Path(config.output)
    if not config.output:
        raise SwinsegError("no output run directory given (-o RUN_DIR)")
    if not config.data:
        raise SwinsegError("no dataset given (--data DIR)")
    if not resume and (run_dir / STATE_FILE).exists():
        raise SwinsegError(f"{run_dir}: already holds a training run; continue it with --resume {run_dir} or pick another -o")

    dist, device = init_distributed(config.device)
    if config.batch_size % dist.world_size:
        raise SwinsegError(f"--batch-size {config.batch_size} is not divisible by the {dist.world_size} processes")
    dtype = resolve_precision(config.precision, device)
    say = console.print if (console is not None and dist.is_main) else None
    log = (lambda text: say(text, highlight=False, markup=False, soft_wrap=True)) if say else (lambda text: None)

    try:
        state = load_training_state(run_dir / STATE_FILE) if resume else None
        _seed_process(_mix_seed(config.seed, dist.rank))
        model, card = starting_point(config)
        data = open_data(config, card)
        classes = tuple(config.classes) if config.classes else (data.classes or card.classes)
        if data.classes and len(classes) != len(data.classes):
            raise SwinsegError(f"--classes names {len(classes)} classes but {config.data} has {len(data.classes)} "
                               f"({', '.join(data.classes)})")
        model, card = build_network(config, model, card, classes, log)
        if len(data.slices) < config.batch_size // dist.world_size:
            raise SwinsegError(f"{config.data}: {len(data.slices)} training slices, fewer than one batch")
        if config.freeze_encoder:
            for parameter in model.encoder_parameters():
                parameter.requires_grad_(False)
        model.to(device).train()
        trained: nn.Module = model
        if dist.enabled:
            trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

        parameters = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(parameters, lr=config.learning_rate, momentum=config.momentum, weight_decay=config.weight_decay)
        batches = len(epoch_loader(data, config, dist, 0, device))
        max_iterations = config.epochs * batches
        scheduler = poly_schedule(optimizer, max_iterations, config.poly_power)
        scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        loss_fn = DiceCELoss(config.ce_weight, config.dice_weight)

        start_epoch, iteration, history, best = 0, 0, [], {"dice": None, "epoch": None}
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, iteration, history, best = state["epoch"], state["iteration"], state["history"], state["best"]
            rng = state["rng"]
            if len(rng) == dist.world_size:
                restore_rng_state(rng[dist.rank])
            else:
                log(f"resuming with {dist.world_size} processes instead of {len(rng)}: random streams start afresh")
            log(f"resuming {run_dir} after epoch {start_epoch} (iteration {iteration})")
        elif dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_config(config, run_dir / CONFIG_FILE)

        validating = config.val_every > 0 and len(data.volumes) > 0
        if dist.is_main:
            where = f"{dist.world_size} processes" if dist.enabled else str(device)
            val = f"{len(data.volumes)} volumes every {config.val_every} epochs" if validating else "off"
            log(
                f"training {card.name}: {len(data.slices)} slices, {len(card.classes)} classes, batch "
                f"{config.batch_size}, lr {config.learning_rate:g}, {config.epochs} epochs = {max_iterations} "
                f"iterations on {where} ({_precision_name(dtype)}); validation: {val}"
            )
        progress = EpochProgress(console if dist.is_main else None)
        for epoch in range(start_epoch, min(config.epochs, stop_after or config.epochs)):
            loader = epoch_loader(data, config, dist, epoch, device)
            row, iteration = _train_epoch(
                trained, loader, loss_fn, optimizer, scheduler, scaler, device, dtype, dist, progress,
                epoch, config.epochs, iteration,
            )
            if validating and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                per_class = validate(model, card, data.volumes, config, device, dist)
                row["val_dice"] = float(np.mean(list(per_class.values())))
                row.update({f"dice_{name}": value for name, value in per_class.items()})
                if best["dice"] is None or row["val_dice"] > best["dice"]:
                    best = {"dice": row["val_dice"], "epoch": epoch + 1}
                    if dist.is_main:
                        _save_model(run_dir / BEST_FILE, model, card, config, epoch + 1, row["val_dice"])
            history.append(row)
            rng = dist.all_gather(capture_rng_state())
            if dist.is_main:
                save_training_state(run_dir / STATE_FILE, {
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "epoch": epoch + 1,
                    "iteration": iteration, "history": history, "best": best, "rng": rng,
                    "config": config.to_dict(), "card": card.to_dict(),
                })
                write_metrics(run_dir / METRICS_FILE, history, card.classes)
                plot_curves(run_dir / CURVES_FILE, history, card.classes)
            progress.finish(_epoch_line(row, config.epochs, best))
            dist.barrier()

        if dist.is_main and len(history) < config.epochs:
            log(f"stopped after epoch {len(history)} of {config.epochs}; continue with --resume {run_dir}")
        elif dist.is_main:
            _save_model(run_dir / FINAL_FILE, model, card, config, config.epochs, None)
            if best["dice"] is None:
                _save_model(run_dir / BEST_FILE, model, card, config, config.epochs, None)
                log(f"done: {run_dir / BEST_FILE} (the last epoch: no validation ran)")
            else:
                log(f"done: {run_dir / BEST_FILE} (validation Dice {best['dice']:.4f} at epoch {best['epoch']})")
        dist.barrier()
        return TrainResult(model, card, history, run_dir, best["dice"])
    finally:
        if dist.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _train_epoch(
    model: nn.Module, loader: torch.utils.data.DataLoader, loss_fn: DiceCELoss, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR, scaler: torch.amp.GradScaler, device: torch.device,
    dtype: torch.dtype | None, dist: Distributed, progress: EpochProgress, epoch: int, epochs: int, iteration: int,
) -> tuple[dict[str, Any], int]:
    """One pass over the loader; returns the epoch's metrics row and the new iteration count."""
    progress.start(epoch + 1, epochs, len(loader))
    started = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    num_classes = _unwrap(model).config.num_classes
    for step, (images, labels) in enumerate(_batches(loader, device, num_classes), start=1):
        with autocast(device, dtype):
            logits = model(images)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        iteration += 1
        loss_sum += loss.detach() * images.shape[0]
        seen += images.shape[0]
        if progress.live:
            elapsed = time.perf_counter() - started
            progress.update(step, loss_sum.item() / seen, scheduler.get_last_lr()[0], seen * dist.world_size / elapsed)
    total_loss, total_seen = dist.sum([loss_sum.item(), float(seen)], device)
    seconds = time.perf_counter() - started
    row = {
        "epoch": epoch + 1, "iteration": iteration, "loss": total_loss / max(total_seen, 1.0),
        "lr": scheduler.get_last_lr()[0], "slices_per_s": total_seen / seconds, "seconds": seconds,
        "val_dice": None,
    }
    return row, iteration


def _batches(
    loader: torch.utils.data.DataLoader, device: torch.device, num_classes: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images (B, 1, H, W) float, labels (B, H, W) long) on the device; labels checked on the CPU first
    (an out-of-range label would otherwise stop a CUDA run with a device-side assert)."""
    for batch in loader:
        images, labels = batch["image"], batch["label"]
        if int(labels.max()) >= num_classes:
            raise SwinsegError(
                f"label {int(labels.max())} in training slices {', '.join(batch['name'])} but the model has "
                f"{num_classes} classes (0-{num_classes - 1}); name every label with --classes"
            )
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True).long()


def _unwrap(model: nn.Module) -> SwinUnet:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model  # type: ignore[return-value]


def _save_model(path: Path, model: SwinUnet, card: ModelCard, config: TrainConfig, epoch: int, dice: float | None) -> None:
    from swinseg import weights

    metadata = {"epoch": str(epoch), "trained_on": str(config.data)}
    if dice is not None:
        metadata["val_dice"] = f"{dice:.6f}"
    weights.save_checkpoint(path, model, card, metadata)


def _precision_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def _epoch_line(row: dict[str, Any], epochs: int, best: dict[str, Any]) -> str:
    remaining = (epochs - row["epoch"]) * row["seconds"]
    line = (
        f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}  lr {row['lr']:.3e}  "
        f"{row['slices_per_s']:.1f} slices/s  {row['seconds']:.1f} s  ETA {_duration(remaining)}"
    )
    if row.get("val_dice") is not None:
        line += f"  val Dice {row['val_dice']:.4f} (best {best['dice']:.4f} @ {best['epoch']})"
    return line


def _duration(seconds: float) -> str:
    seconds = int(math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"
