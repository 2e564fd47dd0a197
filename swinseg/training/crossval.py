"""Cross-validation: `swinseg train --folds N --fold all`, nnU-Net's way, and run folders as ensembles.

Every fold trains in turn into RUN_DIR/fold_K with fold K's cases held out (the splits of RUN_DIR/splits.json,
identical for every fold). A finished fold (its final.safetensors exists) is skipped and an interrupted one is
resumed, so the command can be run again after any stop, or after the folds were trained as separate jobs
with --fold K -o RUN_DIR/fold_K. Then each fold's final model predicts its held-out cases (out-of-fold), and
RUN_DIR/crossval holds the predictions, the `swinseg evaluate` reports of all of them pooled (pooled/) and of
each fold (fold_K/), and summary.json / summary.md: mean Dice and HD95 per fold and pooled.

The run-folder layout, and the models a run folder holds, are swinseg.rundir's.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swinseg import io
from swinseg.errors import SwinsegError
from swinseg.evaluate import Evaluation, evaluate
from swinseg.evaluate_report import fmt, json_safe, write_reports
from swinseg.rundir import CONFIG_FILE, CROSSVAL_FOLDER, FINAL_FILE, FOLD_PREFIX, STATE_FILE, fold_dir
from swinseg.training.datasets import open_nnunet
from swinseg.training.folds import cross_validation_splits, write_splits
from swinseg.training.loop import TrainConfig, resolve_config, train, write_config
from swinseg.training.report import TrainingEvents


def train_all_folds(config: TrainConfig, events: TrainingEvents | None = None) -> dict[str, Any]:
    """Train every fold (skipping finished ones, resuming interrupted ones), predict the out-of-fold cases and
    write RUN_DIR/crossval; returns the cross-validation summary."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SwinsegError("--fold all runs the folds one after another in one process; under torchrun, train "
                           "each fold with --fold K -o RUN_DIR/fold_K, then run --fold all once to summarise")
    events = events or TrainingEvents()
    run_dir = Path(config.output).resolve()
    splits = cross_validation_splits(config)
    assert splits is not None  # TrainConfig refuses --fold all without --folds / --splits
    write_splits(run_dir, splits)
    write_config(dataclasses.replace(config, output=str(run_dir)), run_dir / CONFIG_FILE)  # --resume RUN_DIR
    for fold in range(len(splits)):
        where = fold_dir(run_dir, fold)
        if (where / FINAL_FILE).is_file():
            events.log(f"fold {fold}: finished already ({where / FINAL_FILE}), skipped")
            continue
        events.log(f"fold {fold} of {len(splits)}: validating on {len(splits[fold]['val'])} cases")
        if (where / STATE_FILE).is_file():
            train(resolve_config(where / CONFIG_FILE, {"output": str(where)}), resume=True, events=events)
        else:
            fold_config = dataclasses.replace(config, output=str(where), fold=str(fold), folds=None, splits=None,
                                              val_cases=splits[fold]["val"])
            train(fold_config, events=events)
    return summarise_folds(config, run_dir, splits, events.log)


def summarise_folds(config: TrainConfig, run_dir: Path, splits: list[dict[str, list[str]]],
                    log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Out-of-fold predictions of every fold's final model, their evaluation (pooled and per fold) and the
    summary, all under RUN_DIR/crossval."""
    from swinseg.predict import Predictor
    from swinseg.weights import load_checkpoint

    dataset = open_nnunet(config.data)
    by_name = {case.name: case for case in dataset.cases}
    out = run_dir / CROSSVAL_FOLDER
    predictions = out / "predictions"
    predictions.mkdir(parents=True, exist_ok=True)
    card = None
    for fold, split in enumerate(splits):
        model_file = fold_dir(run_dir, fold) / FINAL_FILE
        model, card = load_checkpoint(model_file)
        predictor = Predictor(model, card, device=config.device, batch_size=config.val_batch_size,
                              precision=config.precision)
        log(f"fold {fold}: predicting its {len(split['val'])} held-out cases with {model_file}")
        for name in split["val"]:
            target = predictions / by_name[name].label.name
            if not target.is_file() or target.stat().st_mtime < model_file.stat().st_mtime:  # none, or stale
                volume = io.read_volume(by_name[name].image)
                io.write_volume(target, predictor.predict_volume(volume).labels, volume)
    assert card is not None
    labels = dict(enumerate(card.classes))
    labels.pop(0)
    pooled = evaluate(predictions, dataset.root / "labelsTr", labels=labels)
    write_reports(pooled, out / "pooled")
    per_fold = []
    for fold, split in enumerate(splits):
        held_out = set(split["val"])
        part = dataclasses.replace(pooled, results=[r for r in pooled.results if r.case.name in held_out],
                                   missing=[], extra=[])
        write_reports(part, out / f"{FOLD_PREFIX}{fold}")
        per_fold.append(_headline(part, fold))
    summary = {"run": str(run_dir), "folds": per_fold, "pooled": _headline(pooled, None),
               "reports": str(out), "models": [str(fold_dir(run_dir, k) / FINAL_FILE) for k in range(len(splits))]}
    with io.atomic_output(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    with io.atomic_output(out / "summary.md") as tmp:
        tmp.write_text(summary_markdown(summary, labels), encoding="utf-8")
    return summary


def _headline(evaluation: Evaluation, fold: int | None) -> dict[str, Any]:
    """Cases, mean Dice / HD95 over classes and the Dice of each class, of one fold or all of them."""
    summary = evaluation.summary()
    return {"fold": fold, "cases": [r.case.name for r in evaluation.results],
            "dice": summary["mean_over_classes"]["dice"], "hd95": summary["mean_over_classes"]["hd95"],
            "dice_per_class": {entry["name"]: entry["dice"]["mean"] for entry in summary["per_class"].values()}}


def summary_markdown(summary: dict[str, Any], labels: dict[int, str]) -> str:
    names = list(labels.values())
    lines = ["# Cross-validation", "", f"Run: `{summary['run']}`; out-of-fold predictions of each fold's final model.",
             "", "| fold | cases | mean Dice | mean HD95 (mm) | " + " | ".join(names) + " |",
             "|---" * (4 + len(names)) + "|"]
    for row in [*summary["folds"], summary["pooled"]]:
        label = "pooled" if row["fold"] is None else str(row["fold"])
        cells = [label, str(len(row["cases"])), fmt(row["dice"]), fmt(row["hd95"], 2),
                 *(fmt(row["dice_per_class"][name]) for name in names)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Reports (`swinseg evaluate` format): `pooled/` and `fold_K/` beside this file.", ""]
    return "\n".join(lines)


def format_summary(summary: dict[str, Any]) -> list[str]:
    """Lines for a terminal: each fold and the pooled means."""
    lines = []
    for row in [*summary["folds"], summary["pooled"]]:
        label = "pooled" if row["fold"] is None else f"fold {row['fold']}"
        hd95 = "n/a" if math.isnan(row["hd95"]) else f"{row['hd95']:.2f} mm"
        lines.append(f"{label:>8}: {len(row['cases'])} cases, mean Dice {row['dice']:.4f}, mean HD95 {hd95}")
    return lines
