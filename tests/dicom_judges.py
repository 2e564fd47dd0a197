"""Independent judges of the DICOM objects swinseg writes, used by every test that writes a SEG or RTSTRUCT:
dciodvfy (dicom3tools) must report no "Error" line (warnings allowed), and plastimatch must rasterise an
RTSTRUCT, on the source series' grid, back onto the mask it was made from (Dice >= 0.98 per structure).

Both tools are Debian packages (`apt-get install dicom3tools plastimatch`; .ci/run installs them). A missing tool
fails the test with that command, never skips it. plastimatch is run with --xor-contours: swinseg writes a hole
as a contour of its own, combined by even-odd inclusion (plastimatch's default ORs the contours of a slice)."""
from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from swinseg.io import Volume, write_volume


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: apt-get install -y dicom3tools plastimatch (as .ci/run does)")
    return path


def assert_valid_dicom(path: Path) -> None:
    """dciodvfy finds no error in the file (warnings are allowed)."""
    run = subprocess.run([_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
    assert not errors, f"dciodvfy {path}:\n" + "\n".join(errors)


def assert_valid_seg(path: Path) -> None:
    """The judges of a DICOM SEG (dciodvfy)."""
    assert_valid_dicom(path)


def plastimatch_masks(path: Path, volume: Volume, folder: Path) -> dict[str, np.ndarray]:
    """ROI name -> mask in the volume's array order, as plastimatch rasterises the RTSTRUCT on the volume's grid
    (ROIs without contours are absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    grid, image, listing = folder / "grid.mha", folder / "structures.mha", folder / "structures.txt"
    write_volume(grid, np.zeros(volume.array.shape, np.int16), volume)
    run = subprocess.run([_tool("plastimatch"), "convert", "--input", str(path), "--fixed", str(grid),
                          "--output-ss-img", str(image), "--output-ss-list", str(listing), "--xor-contours"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"plastimatch convert {path}:\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
    bits = sitk.GetArrayFromImage(sitk.ReadImage(str(image)))  # bit b of a voxel: structure b of the list
    if bits.ndim == volume.array.ndim:
        bits = bits[..., np.newaxis]
    masks = {}
    for line in listing.read_text(encoding="utf-8", errors="replace").splitlines():
        bit, _, name = line.split("|", 2)
        if int(bit) >= 0:
            masks[name] = (bits[..., int(bit) // 8] >> (int(bit) % 8)) & 1 > 0
    return masks


def assert_valid_rtstruct(path: Path, labels: np.ndarray, volume: Volume, names: Sequence[str], folder: Path,
                          min_dice: float = 0.98) -> None:
    """dciodvfy finds no error, and plastimatch's rasterisation of each class present in `labels` (the volume's
    array order; `names[k]` is the ROI name of label k) has a Dice of at least `min_dice` with it."""
    assert_valid_dicom(path)
    masks = plastimatch_masks(path, volume, folder)
    for label in (int(value) for value in np.unique(labels) if value):
        expected, found = labels == label, masks.get(names[label])
        assert found is not None, f"plastimatch found no contour of {names[label]} in {path}"
        dice = 2.0 * np.sum(found & expected) / (found.sum() + expected.sum())
        assert dice >= min_dice, f"{path}: {names[label]} read back by plastimatch with Dice {dice:.4f}"
