"""Cross-validation folds: seeded over the dataset's cases (--folds) or read from a splits.json (--splits),
written to RUN_DIR/splits.json, and the config of one fold with its cases held out."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING

from swinseg.errors import SwinsegError
from swinseg.io import atomic_output
from swinseg.rundir import (
    SPLITS_FILE,
)
from swinseg.training.datasets import check_splits, fold_splits, is_nnunet, open_nnunet
from swinseg.training.options import TrainConfig

if TYPE_CHECKING:
    pass


def hold_out_fold(config: TrainConfig, run_dir: Path, *, write: bool = True) -> TrainConfig:
    """With --folds or --splits: the config with fold `config.fold`'s validation cases, and the folds written
    to RUN_DIR/splits.json (identical for every fold of the same data and seed, so runs of all folds agree)."""
    splits = cross_validation_splits(config)
    if splits is None:
        return config
    if config.fold_index >= len(splits):
        raise SwinsegError(f"--fold {config.fold}: the splits have folds 0 to {len(splits) - 1}")
    if write:
        write_splits(run_dir, splits)
    return dataclasses.replace(config, val_cases=splits[config.fold_index]["val"], folds=None, splits=None)


def write_splits(run_dir: Path, splits: list[dict[str, list[str]]]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(run_dir / SPLITS_FILE) as tmp:
        tmp.write_text(json.dumps(splits, indent=1) + "\n", encoding="utf-8")


def cross_validation_splits(config: TrainConfig) -> list[dict[str, list[str]]] | None:
    """The folds of --folds (seeded over the dataset's cases) or --splits (read and checked); None without."""
    if config.folds is None and config.splits is None:
        return None
    if not is_nnunet(Path(config.data)):
        raise SwinsegError(f"{config.data}: cross-validation folds need an nnU-Net folder (imagesTr, labelsTr)")
    names = open_nnunet(config.data).names
    if config.splits is not None:
        try:
            raw = json.loads(Path(config.splits).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SwinsegError(f"{config.splits}: cannot read the splits ({error})") from error
        splits = check_splits(raw, names, config.splits)
    else:
        assert config.folds is not None
        splits = fold_splits(names, config.folds, config.seed)
    return splits
