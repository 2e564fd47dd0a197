"""Training and finetuning: the published Swin-Unet recipe or the from-scratch one, resumable, on one CPU or
many GPUs.

`train(config)` runs the loop of the config's recipe (swinseg.training.options.RECIPES). Published: 0.4 CE + 0.6
soft Dice, SGD (momentum 0.9, weight decay 1e-4), learning rate 0.05 at batch 24 scaled linearly with the batch
and decayed per iteration by (1 - it / max_it)^0.9, the reference augmentation, seed 1234. Scratch: AdamW with
a linear warm-up before the same decay, the strong augmentation and deep supervision (swinseg.training.supervision;
its heads stay out of checkpoints). Data decisions: the planner (swinseg.plan, `plan.json`). Each epoch it writes
atomically, in the run directory:

- `last.pt`: the full training state (model, optimiser, scheduler, GradScaler, epoch, the RNG states of every
  process, the metrics so far), which `resume=True` continues from bit-identically (shuffling and
  augmentation are seeded by (seed, epoch), so the data of the next epoch does not depend on the past);
- `metrics.csv` and `curves.png` (redrawn at most every 30 s): loss, learning rate, slices/s and validation
  Dice per class;
- `best.safetensors`: the best model on validation (a predict-ready swinseg checkpoint);
- at the end `final.safetensors`: the model after the last epoch (also `best` when nothing was validated).

Validation every `val_every` epochs runs the held-out volumes through `swinseg.predict.Predictor` (the slice
inference of `swinseg predict`) and scores 3-D Dice per class. Under `torchrun` the loop uses
DistributedDataParallel (nccl on CUDA, gloo on CPU); `batch_size` is the global batch, split across the
processes, validation cases are split too, and only rank 0 writes or prints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from swinseg.config import ModelCard
from swinseg.device import autocast, precision_name, resolve_precision
from swinseg.errors import SwinsegError
from swinseg.plan import write_plan
from swinseg.rundir import (
    BEST_FILE,
    CONFIG_FILE,
    CURVES_FILE,
    FINAL_FILE,
    METRICS_FILE,
    PLAN_FILE,
    STATE_FILE,
)
from swinseg.training.augment import StrongBounds
from swinseg.training.datasets import is_synapse
from swinseg.training.distributed import Distributed, init_distributed
from swinseg.training.folds import hold_out_fold
from swinseg.training.losses import DiceCELoss
from swinseg.training.options import FINETUNE_DEFAULTS, TrainConfig, resolve_config, write_config
from swinseg.training.report import TrainingEvents, epoch_line, plot_curves, write_metrics
from swinseg.training.samples import EpochSampler
from swinseg.training.setup import build_network, make_optimizer, poly_schedule, starting_point, with_context
from swinseg.training.state import capture_rng_state, load_training_state, restore_rng_state, save_training_state
from swinseg.training.supervision import DeepSupervision, DeepSupervisionLoss

if TYPE_CHECKING:
    from swinseg.model import SwinUnet
    from swinseg.training.cases import VolumeCase
    from swinseg.training.data import TrainingData

__all__ = ["FINETUNE_DEFAULTS", "TrainConfig", "TrainResult", "resolve_config", "train"]

PATH_OPTIONS = ("data", "output", "pretrained", "checkpoint", "splits")
CURVES_SECONDS = 30.0  # curves.png is redrawn at most this often (and after the last epoch)


# -------------------------------------------------------------------------------------------------- data


def open_data(
    config: TrainConfig, card: ModelCard, progress: Callable[[int, int, str], None] | None = None,
    resumed: bool = False, device: torch.device | str = "cpu", processes: int = 1,
) -> TrainingData:
    """The dataset folder (Synapse or nnU-Net layout) read once through swinseg.training.data, planned by swinseg.plan
    for this card, `device` and number of processes (the plan: `data.plan`) and built as planned; a resumed
    run takes its card's preprocessing as it is."""
    from swinseg import plan as planner
    from swinseg.training.data import open_training_data, read_training_cases

    prep = card.preprocessing if resumed else planner.layout_preprocessing(config, card, is_synapse(Path(config.data)))
    cases = read_training_cases(config.data, prep, seed=config.seed, validation_fraction=config.val_fraction,
                                validation_cases=config.val_cases, progress=progress)
    built = {"img_size": card.network.img_size, "augment": config.augment, "seed": config.seed}
    if resumed:
        mirror = card.mirror_axes if card.mirror_axes is not None else \
            planner.mirror_decision(card.classes, prep, config.mirror, config.augment).value
        return open_training_data(cases, preprocessing=prep, oversample_foreground=config.oversample_foreground,
                                  notes=["preprocessing: the run's card, as resolved when the run started"],
                                  strong_bounds=augmentation_bounds(config, mirror), **built)
    plan = planner.plan_training(cases, card, config, device, processes)
    return open_training_data(cases, preprocessing=plan.preprocessing,
                              oversample_foreground=plan.oversample_foreground.value, notes=plan.lines(), plan=plan,
                              strong_bounds=augmentation_bounds(config, plan.mirror_axes.value), **built)


def augmentation_bounds(config: TrainConfig, mirror_axes: Sequence[int]) -> StrongBounds:
    """The strong augmentation's bounds: the planned (or the run's) mirror axes and the recipe's rotation and
    per-class intensity shift."""
    return StrongBounds(tuple(mirror_axes), config.rotation, config.class_shift)


def training_loader(
    data: TrainingData, config: TrainConfig, dist: Distributed, device: torch.device
) -> tuple[torch.utils.data.DataLoader, EpochSampler]:
    """The loader of every epoch (its workers persist: starting them each epoch cost small datasets half their
    time) and its sampler, to be given each epoch with `set_epoch`. Shuffling (seed, epoch) and augmentation
    (seed, epoch, slice index) depend on nothing that ran before, so a resumed run draws exactly the batches of
    an uninterrupted one, with any number of workers."""
    sampler = EpochSampler(data.slices, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=config.seed)
    with _no_worker_advice():
        loader = torch.utils.data.DataLoader(
            data.slices, batch_size=config.batch_size // dist.world_size, sampler=sampler,
            num_workers=config.num_workers, pin_memory=device.type == "cuda", persistent_workers=config.num_workers > 0,
        )
    return loader, sampler


@contextlib.contextmanager
def _no_worker_advice() -> Iterator[None]:
    """Without torch's warning that the workers outnumber the usable cores: the default follows those cores,
    and a larger --num-workers is the user's choice (the run's description says how many run)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
        yield


def _mix_seed(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


def _seed_process(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------- validation


def validate(
    model: SwinUnet, card: ModelCard, cases: Sequence[VolumeCase], config: TrainConfig, device: torch.device,
    dist: Distributed,
) -> dict[str, float]:
    """Mean 3-D Dice per foreground class over `cases`, each predicted slice by slice exactly as `swinseg
    predict` does (a class empty in both prediction and reference is left out of its mean). Cases are split
    across processes; every process gets the same result."""
    from swinseg.metrics import dice
    from swinseg.predict import Predictor

    was_training = model.training
    predictor = Predictor(model, card, device=device, batch_size=config.val_batch_size, precision=config.precision)
    scores = []
    for index in range(dist.rank, len(cases), dist.world_size):
        case = cases[index]
        prediction = predictor.predict_prepared(case.prepared).labels
        scores.append([dice(prediction == c, case.label == c) for c in range(1, len(card.classes))])
    model.train(was_training)
    everything = np.asarray([row for rows in dist.all_gather(scores) for row in rows], dtype=np.float64)
    with warnings.catch_warnings():  # a class absent from every case (and its prediction) stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(everything, axis=0)
    return {name: float(value) for name, value in zip(card.classes[1:], means)}


# -------------------------------------------------------------------------------------------------- loop


@dataclass
class Step:
    """One optimisation step: forward under autocast, loss, (scaled) backward, SGD step, poly lr step."""

    loss_fn: nn.Module  # DiceCELoss, or DeepSupervisionLoss over it for a DeepSupervision model
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    scaler: torch.amp.GradScaler
    device: torch.device
    dtype: torch.dtype | None

    @classmethod
    def for_model(cls, model: nn.Module, config: TrainConfig, max_iterations: int, device: torch.device,
                  dtype: torch.dtype | None) -> Step:
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
        loss: nn.Module = DiceCELoss(config.ce_weight, config.dice_weight, dice_background=config.dice_background)
        if isinstance(model, DeepSupervision):
            loss = DeepSupervisionLoss(loss, 1 + len(model.heads))
        return cls(loss, optimizer,
                   poly_schedule(optimizer, max_iterations, config.poly_power, config.warmup),
                   torch.amp.GradScaler(device.type, enabled=dtype == torch.float16), device, dtype)

    @property
    def iteration(self) -> int:
        return self.scheduler.last_epoch

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def __call__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            logits = model(images)
        loss = self.loss_fn(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def train_epoch(
    model: nn.Module, loader: Any, step: Step, dist: Distributed, events: TrainingEvents, epoch: int, epochs: int
) -> dict[str, Any]:
    """One pass over the loader (batches of dict(image, label, name)); returns the epoch's metrics row."""
    events.epoch_started(epoch + 1, epochs, len(loader))
    started = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=step.device)
    seen, shown = 0, started
    num_classes = _unwrap(model).config.num_classes
    for done, (images, labels) in enumerate(_batches(loader, step.device, num_classes), start=1):
        loss_sum += step(model, images, labels) * images.shape[0]
        seen += images.shape[0]
        now = time.perf_counter()
        if events.steps_wanted and (now - shown > 0.5 or done == len(loader)):  # .item() waits for the GPU
            events.step(done, loss_sum.item() / seen, step.lr, seen * dist.world_size / (now - started))
            shown = now
    total_loss, total_seen = dist.sum([loss_sum.item(), float(seen)], step.device)
    seconds = time.perf_counter() - started
    return {"epoch": epoch + 1, "iteration": step.iteration, "loss": total_loss / max(total_seen, 1.0),
            "lr": step.lr, "slices_per_s": total_seen / seconds, "seconds": seconds, "val_dice": None}


def _batches(
    loader: Any, device: torch.device, num_classes: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(images (B, 1, H, W) float, labels (B, H, W) long) on the device; labels checked on the CPU first
    (an out-of-range label would otherwise stop a CUDA run with a device-side assert)."""
    with _no_worker_advice():
        batches = iter(loader)
    for batch in batches:
        images, labels = batch["image"], batch["label"]
        if int(labels.max()) >= num_classes:
            raise SwinsegError(
                f"label {int(labels.max())} in training slices {', '.join(batch['name'])} but the model has "
                f"{num_classes} classes (0-{num_classes - 1}); name every label with --classes"
            )
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True).long()


@dataclass
class TrainResult:
    """What a run leaves: the (unwrapped) model, its card, the metrics history and the run directory."""

    model: SwinUnet
    card: ModelCard
    history: list[dict[str, Any]]
    run_dir: Path
    best_dice: float | None


class Trainer:
    """A training run in one process of a (possibly one-process) job, set up from the config; `restore()`
    continues a last.pt state, `run()` trains the remaining epochs."""

    def __init__(self, config: TrainConfig, dist: Distributed, device: torch.device, events: TrainingEvents,
                 resumed_card: ModelCard | None = None) -> None:
        """`resumed_card`: the card of the run being resumed; its network is built as is (the weights come
        from the state), without reading --checkpoint or --pretrained again."""
        from swinseg.model import SwinUnet

        self.config, self.dist, self.device, self.events = config, dist, device, events
        self.log = events.log
        self.run_dir = Path(config.output)
        self.dtype = resolve_precision(config.precision, device)
        _seed_process(_mix_seed(config.seed, dist.rank))
        if resumed_card is not None:
            self.model, self.card = SwinUnet(resumed_card.network), resumed_card
            self.data = open_data(config, resumed_card, events.loading, resumed=True)
        else:
            model, card = starting_point(config)
            card = with_context(config, model, card)
            self.data = open_data(config, card, events.loading, device=device, processes=dist.world_size)
            assert self.data.plan is not None
            config = self.config = self.data.plan.apply_to_config(config)  # the batch that fits the device
            card = self.data.plan.apply_to_card(card)  # resolved preprocessing, fingerprint
            classes = tuple(config.classes) if config.classes else (self.data.classes or card.classes)
            if self.data.classes and len(classes) != len(self.data.classes):
                raise SwinsegError(f"--classes names {len(classes)} classes but {config.data} has "
                                   f"{len(self.data.classes)} ({', '.join(self.data.classes)})")
            self.model, self.card = build_network(config, model, card, classes, self.log)
        if len(self.data.slices) < config.batch_size // dist.world_size:
            raise SwinsegError(f"{config.data}: {len(self.data.slices)} training slices, fewer than one batch")
        if config.freeze_encoder:
            for parameter in self.model.encoder_parameters():
                parameter.requires_grad_(False)
        self.model.to(device).train()
        self.supervised = DeepSupervision(self.model).to(device) if config.deep_supervision else None
        trained: nn.Module = self.model if self.supervised is None else self.supervised
        self.trained = trained
        if dist.enabled:
            ids = [device.index] if device.type == "cuda" else None
            self.trained = nn.parallel.DistributedDataParallel(trained, device_ids=ids)
        self.loader, self.sampler = training_loader(self.data, config, dist, device)
        self.batches_per_epoch = len(self.loader)
        if config.iterations is not None:  # a budget in optimiser steps: whole epochs that reach it
            epochs = max(1, -(-config.iterations // self.batches_per_epoch))
            config = self.config = dataclasses.replace(config, epochs=epochs)
        self.step = Step.for_model(trained, config, config.epochs * self.batches_per_epoch, device, self.dtype)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"dice": None, "epoch": None}
        self.plotted = -float("inf")  # when curves.png was last drawn (time.perf_counter)

    @property
    def validating(self) -> bool:
        return self.config.val_every > 0 and len(self.data.volumes) > 0

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a last.pt state: weights, optimiser/scheduler/scaler, metrics and RNG streams."""
        self.model.load_state_dict(state["model"])
        if self.supervised is not None:
            self.supervised.heads.load_state_dict(state["heads"])
        self.step.load_state_dict(state)
        self.history, self.best = state["history"], state["best"]
        if len(state["rng"]) == self.dist.world_size:
            restore_rng_state(state["rng"][self.dist.rank])
        else:
            self.log(f"resuming with {self.dist.world_size} processes instead of {len(state['rng'])}: "
                     "random streams start afresh")
        self.log(f"resuming {self.run_dir} after epoch {state['epoch']} (iteration {self.step.iteration})")

    def describe(self) -> str:
        config, dist = self.config, self.dist
        where = f"{dist.world_size} processes" if dist.enabled else str(self.device)
        precision = precision_name(self.dtype)
        validation = (f"{_count(len(self.data.volumes), 'volume')} every {_count(config.val_every, 'epoch')}"
                      if self.validating else "off")
        return (f"training {self.card.name}: {len(self.data.slices)} slices, {len(self.card.classes)} classes, "
                f"batch {config.batch_size}, lr {config.learning_rate:g}, {_count(config.epochs, 'epoch')} = "
                f"{config.epochs * self.batches_per_epoch} iterations on {where} ({precision}), "
                f"{_count(config.num_workers, 'loader worker')}; validation: {validation}")

    def run(self, stop_after: int | None = None) -> TrainResult:
        config = self.config
        for epoch in range(len(self.history), min(config.epochs, stop_after or config.epochs)):
            self.sampler.set_epoch(epoch)
            row = train_epoch(self.trained, self.loader, self.step, self.dist, self.events, epoch, config.epochs)
            if self.validating and ((epoch + 1) % config.val_every == 0 or epoch + 1 == config.epochs):
                self.events.validating(f"validating on {_count(len(self.data.volumes), 'volume')}")
                self.validate(row)
            self.history.append(row)
            self.save()
            self.events.epoch_finished(epoch_line(row, config.epochs, self.best))
            self.dist.barrier()
        if len(self.history) == config.epochs:
            self.finish()
        else:
            self.log(f"stopped after epoch {len(self.history)} of {config.epochs}; continue with --resume "
                     f"{self.run_dir}")
        self.dist.barrier()
        return TrainResult(self.model, self.card, self.history, self.run_dir, self.best["dice"])

    def validate(self, row: dict[str, Any]) -> None:
        """Validation Dice into the row; a new best is saved as best.safetensors."""
        per_class = validate(self.model, self.card, self.data.volumes, self.config, self.device, self.dist)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            row["val_dice"] = float(np.nanmean(list(per_class.values())))
        row.update({f"dice_{name}": value for name, value in per_class.items()})
        if self.best["dice"] is None or row["val_dice"] > self.best["dice"]:
            self.best = {"dice": row["val_dice"], "epoch": row["epoch"]}
            if self.dist.is_main:
                self.save_model(BEST_FILE, row["epoch"], row["val_dice"])

    def save(self) -> None:
        """last.pt (with every process's RNG states) and metrics.csv, each atomically; curves.png too after the
        last epoch and at most every CURVES_SECONDS (drawing it took a quarter of a small dataset's epoch)."""
        rng = self.dist.all_gather(capture_rng_state())
        if not self.dist.is_main:
            return
        heads = {} if self.supervised is None else {"heads": self.supervised.heads.state_dict()}
        state = {"model": self.model.state_dict(), **heads, **self.step.state_dict(), "epoch": len(self.history),
                 "history": self.history, "best": self.best, "rng": rng, "config": self.config.to_dict(),
                 "card": self.card.to_dict()}
        save_training_state(self.run_dir / STATE_FILE, state)
        write_metrics(self.run_dir / METRICS_FILE, self.history, self.card.classes)
        now = time.perf_counter()
        if now - self.plotted >= CURVES_SECONDS or len(self.history) == self.config.epochs:
            plot_curves(self.run_dir / CURVES_FILE, self.history, self.card.classes)
            self.plotted = now

    def finish(self) -> None:
        if not self.dist.is_main:
            return
        self.save_model(FINAL_FILE, self.config.epochs, None)
        if self.best["dice"] is None:
            self.save_model(BEST_FILE, self.config.epochs, None)
            self.log(f"done: {self.run_dir / BEST_FILE} (the last epoch: no validation ran)")
        else:
            self.log(f"done: {self.run_dir / BEST_FILE} (validation Dice {self.best['dice']:.4f} at epoch "
                     f"{self.best['epoch']})")

    def save_model(self, name: str, epoch: int, dice: float | None) -> None:
        from swinseg import weights

        metadata = {"epoch": str(epoch), "trained_on": str(self.config.data)}
        if dice is not None:
            metadata["val_dice"] = f"{dice:.6f}"
        weights.save_checkpoint(self.run_dir / name, self.model, self.card, metadata)


def train(
    config: TrainConfig, *, resume: bool = False, events: TrainingEvents | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train (or finetune, when `config.checkpoint` is set) into `config.output`; see the module docstring.

    `resume`: continue the run in `config.output` from its last.pt. `events`: what rank 0 reports progress
    and its log lines to (swinseg.training.report.TrainingEvents; None shows nothing). `stop_after`: end this
    call after that epoch, leaving a state that `resume` continues (jobs under a wall-time limit); the
    schedule stays the one of `config.epochs`.
    """
    if not config.output:
        raise SwinsegError("no output run directory given (-o RUN_DIR)")
    if not config.data:
        raise SwinsegError("no dataset given (--data DIR)")
    # absolute paths in config.yaml, so that --resume works from any directory
    config = dataclasses.replace(config, **{name: str(Path(value).resolve()) for name in PATH_OPTIONS
                                            if (value := getattr(config, name))})
    run_dir = Path(config.output)
    if not resume and (run_dir / STATE_FILE).exists():
        raise SwinsegError(f"{run_dir}: already holds a training run; continue it with --resume {run_dir} "
                           "or pick another -o")
    dist, device = init_distributed(config.device)
    try:
        if config.batch_size is not None and config.batch_size % dist.world_size:  # the plan's divides
            raise SwinsegError(f"--batch-size {config.batch_size} is not divisible by the {dist.world_size} "
                               "processes")
        if not resume:
            config = hold_out_fold(config, run_dir, write=dist.is_main)
        # rank 0 reads the state and hands it on: other machines of the job need not see the run directory
        state = dist.broadcast(load_training_state(run_dir / STATE_FILE) if resume and dist.is_main else None)
        if state is not None and config.batch_size is None:  # the batch the run was planned with
            config = dataclasses.replace(config, batch_size=state["config"]["batch_size"])
        shown = events if events is not None and dist.is_main else TrainingEvents()
        card = ModelCard.from_dict(state["card"]) if state is not None else None
        trainer = Trainer(config, dist, device, shown, resumed_card=card)
        if state is not None:
            trainer.restore(state)
        if dist.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(run_dir)
            write_config(trainer.config, run_dir / CONFIG_FILE)  # when resuming: with the flags that changed it
            if trainer.data.plan is not None:
                write_plan(run_dir / PLAN_FILE, trainer.data.plan)
        trainer.log(trainer.describe())
        for note in trainer.data.notes:
            trainer.log(f"  {note}")
        if trainer.validating and trainer.data.layout == "synapse" and config.val_cases is None:
            trainer.log("note: validating on the test_vol list, so best.safetensors is chosen on the test set; "
                        "report final.safetensors (as the paper does), or name other test_vol_h5 volumes with "
                        "--val-cases")
        try:
            return trainer.run(stop_after)
        except KeyboardInterrupt:
            if trainer.history:
                trainer.log(f"interrupted during epoch {len(trainer.history) + 1}; {run_dir / STATE_FILE} holds "
                            f"epoch {len(trainer.history)}: continue with --resume {run_dir}")
            raise
    finally:
        if dist.enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Delete the half-written temporary files (io.atomic_output's hidden `.NAME.tmp-*`) of our outputs
    that a killed run left behind; the outputs themselves are always complete."""
    for name in (STATE_FILE, CONFIG_FILE, PLAN_FILE, BEST_FILE, FINAL_FILE, METRICS_FILE, CURVES_FILE):
        for stale in run_dir.glob(f".{name.split('.')[0]}.tmp-*"):
            stale.unlink(missing_ok=True)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _unwrap(model: nn.Module) -> SwinUnet | DeepSupervision:
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return model.module  # type: ignore[return-value]
    return model  # type: ignore[return-value]
