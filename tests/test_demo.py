"""`swinseg demo`: the whole pipeline on phantoms, run through the real commands."""
import json

from typer.testing import CliRunner

from swinseg.cli import app


def test_demo_runs_every_step_and_reports_dice(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train-cases", "3", "--test-cases", "1", "--epochs", "1",
            "--shape", "8", "64", "64", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "$ swinseg train --data" in result.output  # each step is printed as a replayable command
    dice = json.loads((out / "report" / "summary.json").read_text(encoding="utf-8"))["mean_over_classes"]["dice"]
    assert f"mean Dice on 1 held-out phantoms = {dice:.3f}" in result.output
    assert (out / "predictions" / "phantom_000.nii.gz").is_file()
    assert (out / "overlays" / "phantom_000.png").stat().st_size > 1000
    assert (out / "run" / "best.safetensors").is_file()
    again = CliRunner().invoke(app, args)  # an earlier demo is never overwritten
    assert again.exit_code == 1 and "holds an earlier demo" in again.output
