"""The layout of a training run folder, defined once: what `train` writes, what `train --fold all` adds, and the
models a run folder holds for `predict -c RUN_DIR`, `swinseg models add RUN_DIR` and the demo, and what it
records about its training (`run_summary`: data, epochs, recipe, validation Dice, cross-validation).

    RUN_DIR/config.yaml  plan.json  last.pt  best.safetensors  final.safetensors  metrics.csv  curves.png
    RUN_DIR/splits.json  fold_K/ (a run folder each)  crossval/ (out-of-fold predictions and reports)

Torch-free, so that the CLI and the model store can read run folders cheaply.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from swinseg.errors import SwinsegError

CONFIG_FILE = "config.yaml"  # the resolved TrainConfig
PLAN_FILE = "plan.json"  # the planner's decisions, with their reasons
STATE_FILE = "last.pt"  # everything a resume needs
BEST_FILE = "best.safetensors"  # the best validation Dice so far
FINAL_FILE = "final.safetensors"  # the model after the last epoch
METRICS_FILE = "metrics.csv"  # one row per epoch
CURVES_FILE = "curves.png"  # loss and validation Dice
SPLITS_FILE = "splits.json"  # cross-validation folds, nnU-Net's format
FOLD_PREFIX = "fold_"  # RUN_DIR/fold_K: fold K's own run folder
CROSSVAL_FOLDER = "crossval"  # out-of-fold predictions and their reports


def fold_dir(run_dir: Path, fold: int) -> Path:
    """The run folder of fold `fold` inside a cross-validation run."""
    return Path(run_dir) / f"{FOLD_PREFIX}{fold}"


def run_checkpoints(path: str | Path) -> list[Path]:
    """The models a run folder holds: every fold's final model (RUN_DIR/fold_K, an ensemble), else the run's
    own final model (best.safetensors when validation chose one and no final exists). A file is itself."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    folds = sorted((p for p in path.glob(f"{FOLD_PREFIX}*") if p.is_dir() and p.name[len(FOLD_PREFIX):].isdigit()),
                   key=lambda p: int(p.name[len(FOLD_PREFIX):]))
    if folds:
        unfinished = [p.name for p in folds if not (p / FINAL_FILE).is_file()]
        if unfinished:
            raise SwinsegError(f"{path}: {', '.join(unfinished)} not finished (no {FINAL_FILE}); finish them with "
                               f"swinseg train --fold all, or pass the finished folds' files")
        return [p / FINAL_FILE for p in folds]
    for name in (FINAL_FILE, BEST_FILE):
        if (path / name).is_file():
            return [path / name]
    raise SwinsegError(f"{path}: not a training run folder (no {FINAL_FILE}, {BEST_FILE} or {FOLD_PREFIX}K folders)")


def run_summary(source: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """What a run folder and its checkpoint record: data, epochs, recipe, validation Dice (mean and per class
    at the last validated epoch) and the cross-validation summary."""
    summary: dict[str, Any] = {}
    if metadata.get("trained_on"):
        summary["data"] = metadata["trained_on"]
    if metadata.get("epoch"):
        summary["epochs"] = int(metadata["epoch"])
    if metadata.get("val_dice"):
        summary["validation_dice"] = float(metadata["val_dice"])
    run = source if source.is_dir() else source.parent  # a checkpoint inside a run folder: that run's record
    if not (run / CONFIG_FILE).is_file():
        return summary
    import yaml

    config = yaml.safe_load((run / CONFIG_FILE).read_text(encoding="utf-8")) or {}
    for key in ("data", "epochs", "recipe", "model", "folds"):
        if config.get(key) is not None:
            summary[key] = config[key]
    epoch = int(metadata["epoch"]) if source.is_file() and metadata.get("epoch") else None
    summary.update(_validation(run / METRICS_FILE, epoch))
    crossval = run / CROSSVAL_FOLDER / "summary.json"
    if crossval.is_file():
        values = json.loads(crossval.read_text(encoding="utf-8"))
        summary["crossval"] = {"fold_dice": [row["dice"] for row in values["folds"]],
                               "pooled_dice": values["pooled"]["dice"],
                               "pooled_dice_per_class": values["pooled"]["dice_per_class"]}
        summary["validation_dice"] = values["pooled"]["dice"]
        summary["validation_dice_per_class"] = values["pooled"]["dice_per_class"]
    return summary


def _validation(path: Path, epoch: int | None) -> dict[str, Any]:
    """Mean and per-class validation Dice in a metrics.csv: of `epoch` (a checkpoint's), else the last validated."""
    import csv

    if not path.is_file():
        return {}
    with path.open(encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle)
                if row.get("val_dice") and (epoch is None or row.get("epoch") == str(epoch))]
    if not rows:
        return {}
    row = rows[-1]
    per_class = {key[len("dice_"):]: float(value) for key, value in row.items() if key.startswith("dice_") and value}
    return {"validation_dice": float(row["val_dice"]), "validation_epoch": int(row["epoch"]),
            "validation_dice_per_class": per_class}
