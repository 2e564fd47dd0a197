"""CLI: `swinseg train` and `swinseg finetune` (heavy imports stay inside the command bodies).

Every option is also a key of a YAML `--config FILE` (dashes become underscores); flags given on the
command line override the file, which overrides the defaults. Options are declared once in OPTIONS and
shared by both commands.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from swinseg.cli._common import cli_errors, out

# name -> (type, help); the default of every option is None = "not given" (the config file or the recipe decides).
# A help text without "(default: ...)" gets the one TrainConfig, RECIPES and FINETUNE_DEFAULTS define (_help).
OPTIONS: dict[str, tuple[Any, str]] = {
    "data": (Path, "Dataset folder: Synapse layout (train_npz/, test_vol_h5/, lists) or nnU-Net/MSD "
                   "(imagesTr/, labelsTr/, dataset.json)."),
    "output": (Path, "Run directory: config.yaml, last.pt, best.safetensors, final.safetensors, metrics.csv, "
                     "curves.png."),
    "model": (str, "Model card (name or YAML): network, preprocessing, classes; finetune: also a stored model's "
                   "name (swinseg models list), the model to start from. (default: train swin_unet_tiny; finetune "
                   "the checkpoint's card; a reference .pth needs one)"),
    "classes": (str, "Comma-separated label names, index = label value. (default: the dataset's, else the card's)"),
    "freeze_encoder": (bool, "Train only the decoder (small datasets)."),
    "recipe": (str, "published (the paper's: SGD lr 0.05, for ImageNet-initialised encoders) or scratch (AdamW "
                    "with warm-up and deep supervision: what trains a randomly initialised network); sets "
                    "--optimizer, --base-lr, --weight-decay, --warmup, --augment, --rotation, --dice-background "
                    "and --deep-supervision unless given. (default: published with --pretrained and for finetune, "
                    "else scratch)"),
    "epochs": (int, "Epochs."),
    "iterations": (int, "Optimiser steps instead of --epochs (rounded up to whole epochs)."),
    "batch_size": (int, "Global batch size, split across torchrun processes. (default: the plan's: 16 with the "
                        "scratch recipe on a CPU, else 24, less where a GPU's memory is short)"),
    "optimizer": (str, "sgd (momentum --momentum) or adamw (norms and biases not decayed)."),
    "base_lr": (float, "Learning rate at --base-batch, scaled linearly to --batch-size."),
    "base_batch": (int, "Batch size at which --base-lr holds."),
    "lr": (float, "Learning rate as is (no batch scaling). (default: base-lr x batch-size / base-batch)"),
    "momentum": (float, "SGD momentum."),
    "weight_decay": (float, "Weight decay."),
    "warmup": (float, "Share of the iterations with a linear learning-rate warm-up before the poly decay."),
    "poly_power": (float, "Poly decay power, lr x (1 - it/max_it)^p per iteration."),
    "ce_weight": (float, "Cross-entropy weight in the loss."),
    "dice_weight": (float, "Soft Dice weight in the loss."),
    "dice_background": (bool, "Count the background class in the soft Dice (published) or not (nnU-Net)."),
    "deep_supervision": (bool, "Also score the coarser decoder stages against the labels (nnU-Net's deep "
                               "supervision; training only: checkpoints hold the network alone)."),
    "augment": (str, "reference (the published rot90+flip or rotation +-20 degrees), strong (nnU-Net's: scaling, "
                     "rotation, deformation, mirroring along the planned axes, noise, blur, brightness, contrast, "
                     "low resolution, gamma) or none."),
    "rotation": (float, "Strong augmentation: the largest rotation, in degrees."),
    "class_shift": (float, "Strong augmentation: each labelled class's intensity moved by its own random shift up "
                           "to this share of the normalised range (as a contrast phase or another MR sequence "
                           "does; CT window [-125, 275]: 0.375 = 150 HU). It makes a model hold up across contrast "
                           "phases but costs accuracy on scans like the training ones (README, Training recipe)."),
    "mirror": (str, "Strong augmentation's mirroring: auto (planned: no left-right flips when a class names a side "
                    "or is a one-sided organ), both, rows, columns or none. (default: auto)"),
    "context_slices": (int, "2.5-D input: feed each slice with its K neighbours on either side as channels "
                            "(1: slices z-1, z, z+1 as the 3 channels; K > 1 widens the input layer to 2K+1); "
                            "recorded in the checkpoint. (default: the card's, 0)"),
    "spacing": (str, "Target in-plane spacing: auto (the median of the training cases, nnU-Net's rule), none "
                     "(whole slices resized, the published path) or SY,SX in mm; recorded in the checkpoint. "
                     "(default: the card's if it names one, else auto; finetune: the checkpoint's)"),
    "plane": (str, "Slicing plane of the training slices: axial, coronal or sagittal; recorded in the checkpoint, "
                   "so predict slices the same way. (default: the card's, axial; finetune: the checkpoint's)"),
    "oversample_foreground": (float, "Share of training crops centred on a voxel of a random foreground class "
                                     "(with a target spacing; nnU-Net's share)."),
    "seed": (int, "Seed of initialisation, shuffling, augmentation and splits."),
    "val_every": (int, "Validate every N epochs (and after the last); 0 turns validation off."),
    "val_fraction": (float, "nnU-Net layout: fraction of cases held out for validation (Synapse: test_vol "
                            "volumes)."),
    "val_cases": (str, "Comma-separated case names to validate on instead."),
    "folds": (int, "Cross-validation (nnU-Net layout): split the cases into this many seeded folds, written to "
                   "RUN_DIR/splits.json, and validate on --fold."),
    "fold": (str, "The fold held out for validation with --folds or --splits, or all: train every fold in turn "
                  "into RUN_DIR/fold_K (a finished fold is skipped), then predict and evaluate the out-of-fold cases "
                  "into RUN_DIR/crossval."),
    "splits": (Path, "A splits.json (nnU-Net's format: [{\"train\": [...], \"val\": [...]}, ...]) to take the "
                     "folds from."),
    "val_batch_size": (int, "Slices per forward pass in validation."),
    "num_workers": (int, "DataLoader worker processes per training process; results do not depend on it. "
                         "(default: the CPU cores this process may use, at most 8)"),
    "device": (str, "auto, cpu, cuda or cuda:N (torchrun: the local rank's GPU)."),
    "precision": (str, "auto, bf16, fp16 or fp32 (auto: bf16/fp16 on CUDA, fp32 on CPU)."),
}
FLAGS = {"output": ["-o", "--output"], "model": ["-m", "--model"], "checkpoint": ["-c", "--checkpoint"],
         "freeze_encoder": ["--freeze-encoder/--no-freeze-encoder"],
         "dice_background": ["--dice-background/--no-dice-background"],
         "deep_supervision": ["--deep-supervision/--no-deep-supervision"]}
FINETUNE_ONLY = {"checkpoint": (Path, "Trained model to start from: swinseg .safetensors or a reference "
                                      "Swin-Unet checkpoint (with --model CARD).")}
TRAIN_ONLY = {"pretrained": (Path, "ImageNet Swin-T weights (official swin_tiny_patch4_window7_224.pth or timm) "
                                   "to initialise encoder and decoder, as the published recipe does.")}


def _help(name: str, text: str) -> str:
    """`text` with the default that TrainConfig, the recipes and finetune's defaults give `name`, unless it
    states its own."""
    from swinseg.training.options import FINETUNE_DEFAULTS, RECIPES, TrainConfig

    if "(default:" in text or name not in TrainConfig.__dataclass_fields__:
        return text
    if name in RECIPES["scratch"]:
        default = "the recipe's: " + ", ".join(f"{recipe} {_shown(values[name])}" for recipe, values in RECIPES.items())
    else:
        value = TrainConfig.__dataclass_fields__[name].default
        if value in (None, ""):
            return text
        default = _shown(value)
    if name in FINETUNE_DEFAULTS and name != "recipe":
        default += f"; finetune {_shown(FINETUNE_DEFAULTS[name])}"
    return f"{text} (default: {default})"


def _shown(value: Any) -> str:
    """A default as the help shows it: numbers with 3 significant digits, booleans as on/off."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _parameter(name: str, kind: Any, help_text: str) -> inspect.Parameter:
    flags = FLAGS.get(name, [f"--{name.replace('_', '-')}"])
    option = typer.Option(None, *flags, help=_help(name, help_text), show_default=False)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])


def _command(finetune: bool) -> Callable[..., None]:
    """The train or finetune command, its signature built from OPTIONS."""

    def command(**options: Any) -> None:
        _run(finetune, options)

    extra = FINETUNE_ONLY if finetune else TRAIN_ONLY
    parameters = [_parameter(name, kind, text) for name, (kind, text) in {**extra, **OPTIONS}.items()]
    parameters.append(_parameter("config", Path, "YAML file of options (keys as the flags, with underscores); "
                                                 "flags override it."))
    parameters.append(_parameter("register", str, "When the run has finished, add its model to the store under "
                                                  "this name (swinseg models add RUN_DIR --name NAME)."))
    parameters.append(_parameter("resume", Path, "Continue the run in RUN_DIR from its last.pt (its config.yaml; "
                                                 "flags given override it, e.g. --epochs)."))
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__doc__ = FINETUNE_HELP if finetune else TRAIN_HELP
    command.__name__ = "finetune" if finetune else "train"
    return cli_errors(command)


TRAIN_HELP = """Train a Swin-Unet (resumable; torchrun for many GPUs); `swinseg plan DATA` shows the data choices.

With --pretrained the published recipe (the paper's: SGD, cross-entropy + soft Dice, reference augmentation);
without ImageNet weights the scratch recipe (AdamW with warm-up, strong augmentation mirroring only along the
planned axes, deep supervision). Each option below names its default and each recipe's value.
Example: swinseg train --data synapse/ --pretrained swin_tiny_patch4_window7_224.pth -o runs/synapse
"""
FINETUNE_HELP = """Finetune a trained Swin-Unet on new data or a new label set.

Classes with the same name keep their weights, others start fresh; the defaults below start from a lower
learning rate and fewer epochs than training. --freeze-encoder for small datasets.
Example: swinseg finetune --checkpoint best.safetensors --data Dataset001/ -o runs/ft
"""


def _run(finetune: bool, options: dict[str, Any]) -> None:
    from swinseg import store
    from swinseg.errors import SwinsegError
    from swinseg.rundir import CONFIG_FILE
    from swinseg.training.loop import resolve_config, train
    from swinseg.training.options import ALL_FOLDS

    config_file, resume, register = options.pop("config"), options.pop("resume"), options.pop("register")
    if register is not None:
        store.check_name(register)
        if store.is_stored(register):
            raise SwinsegError(f"--register {register}: a stored model has that name; remove it first "
                               f"(swinseg models remove {register}) or choose another")
    overrides = {k: str(v) if isinstance(v, Path) else v for k, v in options.items() if v is not None}
    if resume is not None:
        if config_file is not None:
            raise SwinsegError("--resume uses the run's own config.yaml; leave out --config")
        if "output" in overrides and Path(overrides["output"]).resolve() != resume.resolve():
            raise SwinsegError(f"--resume {resume} writes into {resume}; leave out -o")
        config_file, overrides["output"] = resume / CONFIG_FILE, str(resume)
        if not config_file.is_file():
            raise SwinsegError(f"{resume}: not a swinseg run directory (no {CONFIG_FILE})")
    if finetune and resume is None and "checkpoint" not in overrides:
        stored = store.stored_checkpoint(overrides.get("model"))
        if stored is None:
            raise SwinsegError("finetune needs --checkpoint MODEL (a trained swinseg model or a reference checkpoint) "
                               "or -m STORED_NAME")
        overrides["checkpoint"] = str(stored)
        del overrides["model"]
    config = resolve_config(config_file, overrides, finetune=finetune and resume is None)
    if config.fold == ALL_FOLDS:
        from swinseg.training.crossval import format_summary, train_all_folds

        summary = train_all_folds(config, ConsoleEvents(out))
        for line in format_summary(summary):
            out.print(line, markup=False, highlight=False)
        out.print(f"cross-validation reports: {summary['reports']}", markup=False, highlight=False)
    else:
        train(config, resume=resume is not None, events=ConsoleEvents(out))
    if register is not None:
        _register(Path(config.output), register)


def _register(run_dir: Path, name: str) -> None:
    """Add a finished run to the store (rank 0 only under torchrun)."""
    import os

    from swinseg import store
    from swinseg.rundir import FINAL_FILE

    if os.environ.get("RANK", "0") != "0":
        return
    if not (run_dir / FINAL_FILE).is_file() and not any(run_dir.glob(f"fold_*/{FINAL_FILE}")):
        out.print(f"not registered as {name!r}: {run_dir} has not finished", markup=False, highlight=False)
        return
    entry = store.add(run_dir, name, log=lambda line: out.print(line, markup=False, highlight=False))
    flag = "" if store.default_name() == name else f" -m {name}"
    out.print(f"stored as {name!r}; predict with: swinseg predict scan.nii.gz -o mask.nii.gz{flag} "
              f"({entry.folder})", markup=False, highlight=False, soft_wrap=True)


class ConsoleEvents:
    """Training events (swinseg.training.report.TrainingEvents) on a console: a rich bar per epoch (loss, lr,
    slices/s, ETA) on a terminal, then the epoch's line; only the lines otherwise (logs, pipes)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.steps_wanted = console.is_terminal
        self._bar: Progress | None = None
        self._task: Any = None

    def _start(self, title: str, total: int) -> None:
        self._bar = Progress(
            TextColumn(title), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(title, total=total, info="")

    def _stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def log(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def loading(self, done: int, total: int, name: str) -> None:
        if not self.steps_wanted:
            return
        if self._bar is None:
            self._start("reading cases", total)
        assert self._bar is not None
        self._bar.update(self._task, completed=done, info=name)
        if done >= total:
            self._stop()

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        if self.steps_wanted:
            self._start(f"epoch {epoch}/{epochs}", batches)

    def step(self, done: int, loss: float, lr: float, slices_per_s: float) -> None:
        if self._bar is not None:
            info = f"loss {loss:.4f}  lr {lr:.2e}  {slices_per_s:.1f} slices/s"
            self._bar.update(self._task, completed=done, info=info)

    def validating(self, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, info=text)

    def epoch_finished(self, line: str) -> None:
        self._stop()
        self.log(line)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("train")(_command(finetune=False))
    app.command("finetune")(_command(finetune=True))
