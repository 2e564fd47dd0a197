"""`swinseg train --folds N --fold all`: every fold trained (finished ones skipped, stale predictions redone),
out-of-fold predictions evaluated per fold and pooled; run folders as ensembles in predict."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from swinseg import io
from swinseg.cli import app
from swinseg.errors import SwinsegError
from swinseg.phantom import write_phantom_dataset
from swinseg.rundir import run_checkpoints
from swinseg.training.crossval import train_all_folds
from swinseg.training.loop import TrainConfig
from swinseg.training.report import TrainingEvents

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out


class Log(TrainingEvents):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture(scope="module")
def crossval_run(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Three folds over three 4 x 64 x 64 phantoms, one epoch each."""
    root = tmp_path_factory.mktemp("cv")
    data = write_phantom_dataset(root / "ds", 3, seed=0, shape=(4, 64, 64), spacing=(10.0, 5.5, 5.5))
    config = TrainConfig(data=str(data), output=str(root / "run"), model="swin_unet_test", epochs=1, batch_size=4,
                         num_workers=0, device="cpu", folds=3, fold="all", val_every=0)
    return data, root / "run", train_all_folds(config)


def test_every_fold_trains_and_predicts_its_held_out_cases(crossval_run):
    data, run, summary = crossval_run
    splits = json.loads((run / "splits.json").read_text())
    assert [fold["cases"] for fold in summary["folds"]] == [sorted(split["val"]) for split in splits]
    assert sorted(summary["pooled"]["cases"]) == ["phantom_000", "phantom_001", "phantom_002"]
    for fold, split in enumerate(splits):
        config = (run / f"fold_{fold}" / "config.yaml").read_text()
        assert (run / f"fold_{fold}" / "final.safetensors").is_file() and split["val"][0] in config
        assert (run / "crossval" / f"fold_{fold}" / "summary.json").is_file()
    for name in ("per_case.csv", "summary.json", "summary.md", "dice_hd95.png"):
        assert (run / "crossval" / "pooled" / name).is_file()
    written = json.loads((run / "crossval" / "summary.json").read_text())
    assert written["pooled"]["cases"] == summary["pooled"]["cases"] and 0.0 <= written["pooled"]["dice"] <= 1.0
    pooled_report = json.loads((run / "crossval" / "pooled" / "summary.json").read_text())
    assert pooled_report["mean_over_classes"]["dice"] == pytest.approx(summary["pooled"]["dice"])
    assert "| pooled | 3 |" in (run / "crossval" / "summary.md").read_text()
    prediction = io.read_volume(run / "crossval" / "predictions" / "phantom_001.nii.gz")
    image = io.read_volume(data / "imagesTr" / "phantom_001_0000.nii.gz")
    assert prediction.array.shape == image.array.shape
    assert np.allclose(prediction.direction, image.direction) and np.allclose(prediction.origin, image.origin)


def test_a_second_run_skips_finished_folds_and_redoes_what_changed(crossval_run):
    data, run, _ = crossval_run
    kept = {k: (run / f"fold_{k}" / "final.safetensors").stat().st_mtime_ns for k in range(3)}
    splits = json.loads((run / "splits.json").read_text())
    stale = run / "crossval" / "predictions" / f"{splits[2]['val'][0]}.nii.gz"
    fresh = run / "crossval" / "predictions" / f"{splits[0]['val'][0]}.nii.gz"
    before = fresh.stat().st_mtime_ns
    (run / "fold_2" / "final.safetensors").unlink()  # as if fold 2 had been stopped before its end
    for leftover in ("last.pt", "best.safetensors"):
        (run / "fold_2" / leftover).unlink(missing_ok=True)
    os.rename(run / "fold_2", run / "fold_2_old")
    log = Log()
    config = TrainConfig(data=str(data), output=str(run), model="swin_unet_test", epochs=1, batch_size=4,
                         num_workers=0, device="cpu", folds=3, fold="all", val_every=0)
    train_all_folds(config, log)
    assert sum("skipped" in line for line in log.lines) == 2
    assert all((run / f"fold_{k}" / "final.safetensors").stat().st_mtime_ns == kept[k] for k in (0, 1))
    assert (run / "fold_2" / "final.safetensors").stat().st_mtime_ns > kept[2]
    assert fresh.stat().st_mtime_ns == before  # still valid: not predicted again
    assert stale.stat().st_mtime_ns > (run / "fold_2_old" / "config.yaml").stat().st_mtime_ns


def test_run_folders_stand_for_their_models(crossval_run, tmp_path):
    _, run, _ = crossval_run
    assert run_checkpoints(run) == [run / f"fold_{k}" / "final.safetensors" for k in range(3)]
    assert run_checkpoints(run / "fold_1") == [run / "fold_1" / "final.safetensors"]
    (tmp_path / "fold_0").mkdir()
    (tmp_path / "fold_1").mkdir()
    (tmp_path / "fold_0" / "final.safetensors").write_bytes(b"")
    with pytest.raises(SwinsegError, match="fold_1 not finished"):
        run_checkpoints(tmp_path)
    with pytest.raises(SwinsegError, match="not a training run folder"):
        run_checkpoints(tmp_path / "fold_1")


def test_predict_with_a_run_folder_is_the_ensemble_of_its_folds(crossval_run, tmp_path):
    data, run, _ = crossval_run
    image = data / "imagesTr" / "phantom_000_0000.nii.gz"
    folds = [str(run / f"fold_{k}" / "final.safetensors") for k in range(3)]
    explicit = ["-c", folds[0], "-c", folds[1], "-c", folds[2]]
    for name, sources in (("folder", ["-c", str(run)]), ("files", explicit), ("one", ["-c", folds[1]])):
        result = CliRunner().invoke(app, ["predict", str(image), "-o", str(tmp_path / f"{name}.nii.gz"),
                                          "--device", "cpu", "--backend", "torch", *sources])
        assert result.exit_code == 0, result.output
    folder, files, one = (io.read_volume(tmp_path / f"{n}.nii.gz").array for n in ("folder", "files", "one"))
    np.testing.assert_array_equal(folder, files)
    assert "ensemble of 3 models" in CliRunner().invoke(app, ["predict", str(image), "-o", str(tmp_path / "x.nii.gz"),
                                                              "--device", "cpu", "-c", str(run)]).output
    assert one.shape == folder.shape


def test_fold_all_needs_folds_and_a_valid_fold():
    with pytest.raises(SwinsegError, match="--fold all needs --folds"):
        TrainConfig(fold="all")
    with pytest.raises(SwinsegError, match="--fold 'x'"):
        TrainConfig(folds=3, fold="x")


def test_cli_resume_of_a_cross_validation_run_summarises_it(crossval_run):
    _, run, _ = crossval_run
    result = CliRunner().invoke(app, ["train", "--resume", str(run)])
    assert result.exit_code == 0, result.output
    assert result.output.count("finished already") == 3
    assert "  pooled: 3 cases, mean Dice" in result.output and str(run / "crossval") in result.output
