"""`swinseg weights info` / `swinseg weights convert`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from shared_files import GOLDEN, needs_shared
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.weights import load_checkpoint

UNET = GOLDEN / "swin_unet_small_official.pth"
runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["weights", *args])


@needs_shared
def test_info_describes_reference_checkpoint_and_classifier():
    result = run("info", str(UNET))
    assert result.exit_code == 0, result.output
    assert "reference Swin-Unet" in result.output and "1,717,220" in result.output and "swin_unet." in result.output
    result = run("info", str(GOLDEN / "swin_classifier_small_official.pth"))
    assert result.exit_code == 0 and "classifier" in result.output and "1000" in result.output


@needs_shared
def test_convert_then_load_needs_nothing_else(tmp_path):
    out = tmp_path / "synapse.safetensors"
    names = "background,aorta,gallbladder,kidney_left,kidney_right,liver,pancreas,spleen,stomach"
    result = run("convert", str(UNET), "-o", str(out), "--classes", names)
    assert result.exit_code == 0, result.output
    model, card = load_checkpoint(out)
    assert card.classes == tuple(names.split(",")) and card.network.embed_dim == 24
    io = np.load(GOLDEN / "swin_unet_small_official_io.npz")
    with torch.inference_mode():
        assert np.abs(model(torch.from_numpy(io["input"])).numpy() - io["logits"]).max() <= 1e-4
    info = run("info", str(out))
    assert "swinseg checkpoint" in info.output and "gallbladder" in info.output
    again = run("convert", str(UNET), "-o", str(out), "--model", "swin_unet_tiny")
    assert again.exit_code == 1 and "already exists" in again.output


@needs_shared
def test_convert_refuses_wrong_class_count_and_classifiers(tmp_path):
    result = run("convert", str(UNET), "-o", str(tmp_path / "x.safetensors"), "--classes", "a", "--classes", "b")
    assert result.exit_code == 1 and "2 names given" in result.output
    result = run("convert", str(GOLDEN / "swin_classifier_small_official.pth"), "-o", str(tmp_path / "c.safetensors"))
    assert result.exit_code == 1 and "classifier" in result.output
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"not a weight file\n", b"PK\x03\x04truncated"])
def test_bad_file_is_one_line_error(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    result = run("info", str(path))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
