"""`swinseg demo`: the whole pipeline on phantoms, run through the real commands."""
import json

import nibabel as nib
import pytest
from typer.testing import CliRunner

from swinseg import store
from swinseg.cli import app

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out


def test_demo_runs_every_step_and_reports_dice(tmp_path, monkeypatch):
    monkeypatch.setenv("SWINSEG_HOME", str(tmp_path / "store"))
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--train-cases", "3", "--test-cases", "1", "--epochs", "1",
            "--shape", "8", "64", "64", "--device", "cpu"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "$ swinseg train --data" in result.output  # each step is printed as a replayable command
    dice = {name: json.loads((out / "report" / name / "summary.json").read_text(encoding="utf-8"))
            ["mean_over_classes"]["dice"] for name in ("heldout", "heldout_fov1.5", "heldout_halfspacing")}
    assert f"mean Dice on 1 held-out phantoms = {dice['heldout']:.3f}" in result.output
    assert f"{'1.5x field of view':<20} {dice['heldout_fov1.5']:.3f}" in result.output
    assert f"{'half the spacing':<20} {dice['heldout_halfspacing']:.3f}" in result.output
    assert "spacing: 5.5x5.5 mm — the median in-plane spacing of 2 training case(s)" in result.output
    for name, size in (("heldout", 64), ("heldout_fov1.5", 96), ("heldout_halfspacing", 128)):
        assert nib.load(out / "predictions" / name / "phantom_000.nii.gz").shape == (size, size, 8)
        assert (out / "overlays" / name / "phantom_000.png").stat().st_size > 1000
    assert (out / "run" / "best.safetensors").is_file()
    entry = store.get("demo")  # stored, the default (there was none), and the predict steps used it
    assert entry.members[0].read_bytes() == (out / "run" / "best.safetensors").read_bytes()
    assert store.default_name() == "demo" and "$ swinseg predict" in result.output and "-m demo" in result.output
    scan = out / "data" / "heldout" / "imagesTr" / "phantom_000_0000.nii.gz"
    assert result.output.rstrip().splitlines()[-1] == f"swinseg predict {scan} -o mask.nii.gz"
    again = CliRunner().invoke(app, args)  # an earlier demo is never overwritten
    assert again.exit_code == 1 and "holds an earlier demo" in again.output
