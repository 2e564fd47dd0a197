"""predict --statistics and --preview: per-class statistics checked against an independent numpy/SimpleITK
computation on the real CT, and the files a folder run writes."""
from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from shared_files import EXAMPLE_CT, EXAMPLE_SEG, needs_shared
from typer.testing import CliRunner

from swinseg.cli import app
from swinseg.io import read_volume
from swinseg.statistics import class_statistics


@needs_shared
def test_statistics_match_an_independent_computation_on_the_real_ct():
    scan, seg = read_volume(EXAMPLE_CT), read_volume(EXAMPLE_SEG)
    names = [f"class_{k}" for k in range(int(seg.array.max()) + 1)]
    rows = {row["label"]: row for row in class_statistics(scan, seg.array, names)}
    assert set(rows) == {int(k) for k in np.unique(seg.array) if k > 0}
    image = sitk.ReadImage(str(EXAMPLE_CT))
    hu = sitk.GetArrayFromImage(image).astype(np.float64)
    voxel_ml = np.prod(image.GetSpacing()) / 1000.0
    for label in (1, 5, 52):  # spleen, liver, aorta
        mask = seg.array == label
        row = rows[label]
        assert row["voxels"] == mask.sum()
        assert row["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, abs=1e-3)
        values = hu[mask]
        for key, expected in (("mean", values.mean()), ("std", values.std()), ("median", np.median(values)),
                              ("min", values.min()), ("max", values.max())):
            assert row[key] == pytest.approx(expected, rel=1e-9, abs=1e-9), key
        z, y, x = np.nonzero(mask)
        centre = image.TransformContinuousIndexToPhysicalPoint((x.mean(), y.mean(), z.mean()))
        np.testing.assert_allclose(row["centroid_mm"], centre, atol=1e-3)
        assert row["bbox"] == {"first": [x.min(), y.min(), z.min()], "last": [x.max(), y.max(), z.max()]}
        on_face = any(np.take(mask, i, axis=a).any() for a in range(3) for i in (0, -1))
        assert row["touches_border"] == on_face


def test_border_flag_and_empty_map():
    scan = read_volume_from(np.zeros((4, 6, 6), np.int16))
    labels = np.zeros((4, 6, 6), np.uint8)
    assert class_statistics(scan, labels, ["background", "a", "b"]) == []
    labels[1:3, 2:4, 2:4] = 1  # inside
    labels[0, 0, 0] = 2  # on a face
    rows = {row["name"]: row for row in class_statistics(scan, labels, ["background", "a", "b"])}
    assert rows["a"]["touches_border"] is False and rows["b"]["touches_border"] is True


def read_volume_from(array: np.ndarray):
    from swinseg.io import Volume

    return Volume(array, (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))


def test_folder_run_writes_statistics_previews_and_one_csv(checkpoint, tmp_path):
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        array = rng.normal(40, 150, (20, 24, 4)).astype(np.int16)
        (tmp_path / "in").mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.diag([0.9, 0.8, 2.0, 1.0])), tmp_path / "in" / f"{name}.nii.gz")
    args = ["predict", str(tmp_path / "in"), "-c", str(checkpoint), "-o", str(tmp_path / "out"), "--statistics",
            "--preview"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    with open(out / "statistics.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    for name in ("a", "b"):
        assert (out / f"{name}_preview.png").read_bytes()[:4] == b"\x89PNG"
        stats = json.loads((out / f"{name}_statistics.json").read_text())
        mask = np.asarray(nib.load(out / f"{name}.nii.gz").dataobj)
        counts = {row["label"]: row["voxels"] for row in stats["classes"]}
        assert counts == {int(k): int((mask == k).sum()) for k in np.unique(mask) if k > 0}
        assert sorted(int(r["voxels"]) for r in table if r["case"] == name) == sorted(counts.values())
    before = (out / "statistics.csv").read_text()
    (out / "statistics.csv").unlink()
    rerun = CliRunner().invoke(app, args)  # every case skipped: the table is rebuilt from the JSON files
    assert rerun.exit_code == 0 and "skipped" in rerun.output
    assert (out / "statistics.csv").read_text() == before
