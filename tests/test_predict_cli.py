"""`swinseg predict` end to end: geometry on a real CT header, folders, shards, 2-D images, options, errors."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import scipy.ndimage
import SimpleITK as sitk
import torch
from shared_files import EXAMPLE_CT, needs_shared
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.config import load_card
from swinseg.model import build_model
from swinseg.predict import Predictor
from swinseg.weights import load_checkpoint


def run(*args: str | Path):
    return CliRunner().invoke(app, ["predict", *map(str, args)])


def scan(path: Path, seed: int = 0, shape=(6, 32, 40), dtype=np.int16) -> Path:
    """A small CT-like NIfTI (HU blobs) with an oblique-free but non-identity affine."""
    rng = np.random.default_rng(seed)
    field = scipy.ndimage.gaussian_filter(rng.normal(size=shape), sigma=(1, 4, 4))
    array = (field / field.std() * 150 + 40).astype(dtype)
    affine = np.diag([-0.9, 0.8, 2.0, 1.0])
    affine[:3, 3] = (100.0, -50.0, 20.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.T, affine), path)
    return path


def one_error_line(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "failed:"))]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@needs_shared
def test_mask_has_the_geometry_of_a_real_ct(checkpoint, tmp_path):
    """The real header (RAS affine with an offset origin, qform 0 / sform 2), cropped to 10 axial slices."""
    real = nib.load(EXAMPLE_CT)
    source = tmp_path / "ct.nii.gz"
    nib.save(real.slicer[:, :, 50:60], source)
    output = tmp_path / "mask.nii.gz"
    result = run(source, "-c", checkpoint, "-o", output, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip())
    scan_image, mask = nib.load(source), nib.load(output)
    assert scan_image.header.get_sform(coded=True)[1] == real.header.get_sform(coded=True)[1]
    assert not np.allclose(scan_image.affine, np.eye(4))
    assert mask.shape == scan_image.shape and mask.get_data_dtype() == np.uint8
    np.testing.assert_allclose(mask.affine, scan_image.affine, atol=1e-6)
    for form in ("qform", "sform"):
        code = getattr(mask.header, f"get_{form}")(coded=True)[1]
        assert code == getattr(scan_image.header, f"get_{form}")(coded=True)[1]
    assert summary["status"] == "done" and summary["shape"] == list(scan_image.shape)
    assert summary["spacing"] == [3.0, 3.0, 3.0] and set(summary["voxels"]) <= set(load_card("swin_unet_test").classes)
    labels = np.asarray(mask.dataobj)
    assert len(np.unique(labels)) >= 3
    # independent route: SimpleITK orients the scan to LPS, the network predicts, SimpleITK orients back
    image = sitk.ReadImage(str(source))
    own_code = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    assert own_code != "LPS"  # the RAS header needs flips
    oriented = sitk.DICOMOrient(image, "LPS")
    slices = np.clip((sitk.GetArrayFromImage(oriented).astype(np.float32) + 125) / 400, 0, 1)
    model, card = load_checkpoint(checkpoint)
    predicted = sitk.GetImageFromArray(Predictor(model, card, device="cpu").predict_slices(slices).labels)
    predicted.CopyInformation(oriented)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.DICOMOrient(predicted, own_code)), labels.T)


def test_folder_run_skips_isolates_failures_and_overwrites(checkpoint, tmp_path):
    scan(tmp_path / "in" / "a_0000.nii.gz", 1)
    scan(tmp_path / "in" / "b_0000.nii.gz", 2)
    (tmp_path / "in" / "c_0000.nii.gz").write_bytes(b"not a nifti at all")
    out = tmp_path / "out"
    first = run(tmp_path / "in", "-c", checkpoint, "-o", out)
    assert first.exit_code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a.nii.gz", "b.nii.gz"]
    one_error_line(first, "c_0000.nii.gz")
    assert "a_0000.nii.gz" in first.stdout and "b_0000.nii.gz" in first.stdout
    assert "3 case(s): 2 done, 1 failed" in first.stderr

    mtime = (out / "a.nii.gz").stat().st_mtime_ns
    (tmp_path / "in" / "c_0000.nii.gz").unlink()
    second = run(tmp_path / "in", "-c", checkpoint, "-o", out, "--json")
    assert second.exit_code == 0, second.output
    assert [json.loads(line)["status"] for line in second.stdout.splitlines()] == ["skipped", "skipped"]
    assert (out / "a.nii.gz").stat().st_mtime_ns == mtime

    third = run(tmp_path / "in" / "a_0000.nii.gz", "-c", checkpoint, "-o", f"{out}/", "--overwrite", "-q")
    assert third.exit_code == 0 and third.stdout == ""
    assert (out / "a.nii.gz").stat().st_mtime_ns != mtime


def test_shards_and_torchrun_split_the_work(checkpoint, tmp_path, monkeypatch):
    for i in range(3):
        scan(tmp_path / "in" / f"case{i}.nii.gz", i, shape=(2, 24, 24))
    assert run(tmp_path / "in", "-c", checkpoint, "-o", tmp_path / "s0", "--shard", "0/2").exit_code == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert run(tmp_path / "in", "-c", checkpoint, "-o", tmp_path / "s1", "--device", "cpu").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "s0").iterdir()) == ["case0.nii.gz", "case2.nii.gz"]
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == ["case1.nii.gz"]
    both = run(tmp_path / "in", "-c", checkpoint, "-o", tmp_path / "s2", "--shard", "0/2")
    assert both.exit_code == 1 and "drop --shard" in both.output  # ranks would all do the same shard


def test_png_in_png_out(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    image = (scipy.ndimage.gaussian_filter(rng.random((40, 56)), 3) * 255 / 0.6).clip(0, 255).astype(np.uint8)
    (tmp_path / "in").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(image), str(tmp_path / "in" / "slice.png"))
    result = run(tmp_path / "in", "-c", checkpoint, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "slice.png")))
    assert mask.shape == (40, 56) and mask.dtype == np.uint8 and mask.max() <= 5


def test_probabilities_classes_and_keep_largest(checkpoint, tmp_path):
    source = scan(tmp_path / "ct.nii.gz", 4, shape=(6, 32, 40))
    plain = tmp_path / "plain.nii.gz"
    assert run(source, "-c", checkpoint, "-o", plain, "--save-probabilities").exit_code == 0
    probabilities = nib.load(tmp_path / "plain_probabilities.nii.gz")
    assert probabilities.shape == (40, 32, 6, 6)
    np.testing.assert_allclose(probabilities.affine, nib.load(source).affine, atol=1e-6)
    sums = np.asarray(probabilities.dataobj).sum(axis=-1)
    np.testing.assert_allclose(sums, 1.0, atol=5e-3)
    labels = np.asarray(nib.load(plain).dataobj)
    assert (np.asarray(probabilities.dataobj).argmax(axis=-1) == labels).mean() > 0.999

    subset = tmp_path / "subset.nii.gz"
    assert run(source, "-c", checkpoint, "-o", subset, "--classes", "liver,5", "--keep-largest").exit_code == 0
    kept = np.asarray(nib.load(subset).dataobj)
    assert set(np.unique(kept)) <= {0, 1, 5} and set(np.unique(labels)) > {0, 1, 5}
    structure = np.ones((3, 3, 3))
    for class_id in (1, 5):
        assert scipy.ndimage.label(kept == class_id, structure)[1] <= 1
        assert np.all(labels[kept == class_id] == class_id)  # only removals


@pytest.mark.parametrize(
    "case,fragments",
    [
        ("missing", ["missing.nii.gz", "not found"]),
        ("empty", ["empty.nii.gz", "empty"]),
        ("text", ["text.nii.gz", "not a readable image"]),
        ("nan", ["nan.nii.gz", "NaN"]),
        ("same", ["same.nii.gz", "overwrite"]),
    ],
)
def test_bad_inputs_give_one_line_errors(checkpoint, tmp_path, case, fragments):
    path = tmp_path / f"{case}.nii.gz"
    output = path if case == "same" else tmp_path / "mask.nii.gz"
    if case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("hello, not an image\n")
    elif case in ("nan", "same"):
        scan(path, dtype=np.float32)
        if case == "nan":
            image = nib.load(path)
            data = np.asarray(image.dataobj).copy()
            data[0, 0, 0] = np.inf
            nib.save(nib.Nifti1Image(data, image.affine), path)
    one_error_line(run(path, "-c", checkpoint, "-o", output), *fragments)
    assert not output.exists() or case == "same"


def test_model_source_errors(checkpoint, tmp_path):
    source = scan(tmp_path / "ct.nii.gz")
    # a bare state dict with a card naming 4 classes for a 6-class network
    card_file = tmp_path / "four.yaml"
    card_file.write_text(
        load_card("swin_unet_test").source.read_text().replace(
            "classes: [background, liver, spleen, kidney_left, kidney_right, aorta]",
            "classes: [background, liver, spleen, aorta]",
        )
    )
    state = tmp_path / "state.pth"
    torch.save(build_model("swin_unet_test").state_dict(), state)
    mask = tmp_path / "m.nii.gz"
    one_error_line(run(source, "--model", card_file, "--weights", state, "-o", mask), "state.pth", "6", "4")
    one_error_line(run(source, "-o", tmp_path / "m.nii.gz"), "--checkpoint")
    one_error_line(run(source, "-c", checkpoint, "--protocol", "reference", "--tta", "-o", mask), "--tta")
    one_error_line(run(source, "-c", checkpoint, "--classes", "heart", "-o", tmp_path / "m.nii.gz"), "heart", "liver")
    one_error_line(run(source, "-c", checkpoint, "--shard", "2/2", "-o", tmp_path / "m.nii.gz"), "--shard")
    assert not (tmp_path / "m.nii.gz").exists()
