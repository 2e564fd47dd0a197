"""swinseg.evaluate and `swinseg evaluate`: case matching, labels, geometry, reports, the CLI."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from medpy.metric import binary as medpy_binary
from shared_files import EXAMPLE_SEG, needs_shared
from typer.testing import CliRunner

from swinseg import evaluate as ev
from swinseg import evaluate_report as rep
from swinseg.cli import app
from swinseg.errors import SwinsegError
from swinseg.io import Volume, read_volume, write_volume

SPACING = (3.0, 0.8, 0.7)  # z, y, x: anisotropic, so mm and voxel units differ
SHAPE = (10, 32, 28)
runner = CliRunner()


def _like(spacing: tuple[float, ...] = SPACING, origin: tuple[float, ...] = (0.0, 0.0, 0.0)) -> Volume:
    return Volume(np.zeros(SHAPE, np.uint8), spacing, origin, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _labels(seed: int) -> np.ndarray:
    """A label map with organs 1-3 (ellipsoids) at random places."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE, dtype=np.float64)
    labels = np.zeros(SHAPE, np.uint8)
    for label, radii in ((1, (3, 8, 8)), (2, (2, 5, 4)), (3, (2, 3, 3))):
        centre = [rng.uniform(r, n - r) for r, n in zip(radii, SHAPE)]
        labels[sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1] = label
    return labels


def _write(path: Path, array: np.ndarray, like: Volume | None = None) -> Path:
    write_volume(path, array, like or _like())
    return path


@pytest.fixture()
def dataset(tmp_path: Path) -> dict[str, object]:
    """refs case_a..case_c; preds named nnU-Net style for case_a, missing for case_c, plus an extra one."""
    refs, preds = tmp_path / "refs", tmp_path / "preds"
    arrays = {}
    for i, name in enumerate(("case_a", "case_b", "case_c")):
        ref = _labels(i)
        pred = np.roll(ref, 1, axis=2)
        pred[pred == 3] = 0 if name == "case_b" else 3  # case_b misses organ 3
        arrays[name] = (pred, ref)
        _write(refs / f"{name}.nii.gz", ref)
    _write(preds / "case_a_0000.nii.gz", arrays["case_a"][0])
    _write(preds / "case_b.nii.gz", arrays["case_b"][0])
    _write(preds / "case_z.nii.gz", arrays["case_b"][0])
    return {"refs": refs, "preds": preds, "arrays": arrays}


def test_match_cases_names_missing_and_extra(dataset: dict, tmp_path: Path) -> None:
    match = ev.match_cases(dataset["preds"], dataset["refs"])
    assert [(c.name, c.prediction.name, c.reference.name) for c in match.cases] == [
        ("case_a", "case_a_0000.nii.gz", "case_a.nii.gz"),
        ("case_b", "case_b.nii.gz", "case_b.nii.gz"),
    ]
    assert match.missing == ["case_c"] and match.extra == ["case_z"]
    with pytest.raises(SwinsegError, match="not a mix"):
        ev.match_cases(dataset["preds"] / "case_b.nii.gz", dataset["refs"])
    _write(dataset["preds"] / "case_b.nrrd", dataset["arrays"]["case_b"][0])
    with pytest.raises(SwinsegError, match="two images for case 'case_b'"):
        ev.match_cases(dataset["preds"], dataset["refs"])


def test_evaluate_equals_medpy_in_mm_and_voxels(dataset: dict) -> None:
    for voxel_units in (False, True):
        result = ev.evaluate(dataset["preds"], dataset["refs"], settings=ev.Settings(voxel_units=voxel_units))
        assert list(result.labels) == [1, 2, 3]  # default: every label in the references
        assert result.missing == ["case_c"] and result.extra == ["case_z"]
        stored = read_volume(dataset["refs"] / "case_a.nii.gz").spacing  # NIfTI keeps float32: 0.7 -> 0.69999999
        assert stored == pytest.approx(SPACING) and stored != SPACING
        spacing = None if voxel_units else stored
        for row in result.rows():
            pred, ref = (a == row["label"] for a in dataset["arrays"][row["case"]])
            assert row["dice"] == medpy_binary.dc(pred, ref)
            assert row["ref_ml"] == pytest.approx(ref.sum() * np.prod(SPACING) / 1000)  # always mm-based
            if pred.any():
                assert row["hd95"] == medpy_binary.hd95(pred, ref, spacing)
                assert row["assd"] == medpy_binary.assd(pred, ref, spacing)
            else:
                assert row["flag"] == "pred_empty" and row["dice"] == 0.0
                extent = np.asarray(SHAPE) * (np.asarray(stored) if spacing else 1.0)
                assert row["hd95"] == pytest.approx(math.sqrt(np.sum(extent**2)))


def test_parallel_jobs_give_the_same_rows(dataset: dict) -> None:
    serial = ev.evaluate(dataset["preds"], dataset["refs"], jobs=1).rows()
    parallel = ev.evaluate(dataset["preds"], dataset["refs"], jobs=2).rows()
    assert parallel == serial


def test_labels_from_options_card_and_dataset_json(tmp_path: Path) -> None:
    assert ev.parse_labels(["1,2", "5=liver"]) == {1: None, 2: None, 5: "liver"}
    assert ev.parse_labels(["liver,spleen"]) == {1: "liver", 2: "spleen"}  # overlay's meaning too
    with pytest.raises(SwinsegError, match="--labels"):
        ev.parse_labels(["x=liver"])
    with pytest.raises(SwinsegError, match="positive"):
        ev.parse_labels(["0"])
    v2 = tmp_path / "v2.json"
    v2.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    v1 = tmp_path / "v1.json"
    v1.write_text(json.dumps({"labels": {"0": "background", "1": "liver", "2": "tumour"}}))
    assert ev.dataset_json_labels(v2) == ev.dataset_json_labels(v1) == {1: "liver", 2: "tumour"}
    regions = tmp_path / "regions.json"
    regions.write_text(json.dumps({"labels": {"background": 0, "whole": [1, 2]}}))
    with pytest.raises(SwinsegError, match="region-based"):
        ev.dataset_json_labels(regions)
    assert ev.resolve_labels(["2"], dataset_json=v2) == {2: "tumour"}
    assert ev.resolve_labels(["7"], dataset_json=v2) == {7: "label_7"}
    card = ev.resolve_labels(card="swin_unet_tiny")
    assert card is not None and card[1] == "aorta" and card[8] == "stomach" and 0 not in card
    assert ev.resolve_labels() is None


def test_explicit_labels_and_labels_only_in_predictions(dataset: dict) -> None:
    pred, ref = dataset["arrays"]["case_a"]
    pred = pred.copy()
    pred[0, 0, 0] = 7
    folder = dataset["preds"].parent / "p7"
    _write(folder / "case_a.nii.gz", pred)
    default = ev.evaluate(folder, dataset["refs"])
    assert list(default.labels) == [1, 2, 3] and default.labels_only_in_predictions == [7]
    chosen = ev.evaluate(folder, dataset["refs"], labels={7: "stray", 4: "absent"})
    rows = {row["label"]: row for row in chosen.rows()}
    assert rows[7]["flag"] == "ref_empty" and rows[7]["dice"] == 0.0 and rows[7]["class"] == "stray"
    assert rows[4]["flag"] == "both_empty" and rows[4]["dice"] == 1.0  # worst policy: nothing to find


def test_geometry_mismatch_fails_or_resamples(tmp_path: Path) -> None:
    ref = _labels(3)
    _write(tmp_path / "ref.nii.gz", ref)
    _write(tmp_path / "shifted.nii.gz", ref, _like(origin=(0.0, 5.0, 0.0)))
    with pytest.raises(SwinsegError, match="geometry differs.*--resample-to-reference"):
        ev.evaluate(tmp_path / "shifted.nii.gz", tmp_path / "ref.nii.gz")
    # the same anatomy on a grid of half the resolution in x: resampling brings it back
    coarse = ref[:, :, ::2]
    like = Volume(np.zeros(coarse.shape, np.uint8), (3.0, 0.8, 1.4), (0.35, 0.0, 0.0), _like().direction)
    write_volume(tmp_path / "coarse.nii.gz", coarse, like)
    result = ev.evaluate(tmp_path / "coarse.nii.gz", tmp_path / "ref.nii.gz",
                         settings=ev.Settings(resample_to_reference=True))  # fmt: skip
    assert all(row["dice"] > 0.8 for row in result.rows())


def test_float_and_bad_label_maps(tmp_path: Path) -> None:
    ref = _labels(4)
    _write(tmp_path / "ref.nii.gz", ref)
    _write(tmp_path / "float.nii.gz", ref.astype(np.float32))
    assert all(row["dice"] == 1.0 for row in ev.evaluate(tmp_path / "float.nii.gz", tmp_path / "ref.nii.gz").rows())
    _write(tmp_path / "prob.nii.gz", ref.astype(np.float32) * 0.5)
    with pytest.raises(SwinsegError, match="prob.nii.gz: not a label map"):
        ev.evaluate(tmp_path / "prob.nii.gz", tmp_path / "ref.nii.gz")
    _write(tmp_path / "empty.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(SwinsegError, match="no foreground label"):
        ev.evaluate(tmp_path / "ref.nii.gz", tmp_path / "empty.nii.gz")


def test_reports_with_nan_policy(dataset: dict, tmp_path: Path) -> None:
    result = ev.evaluate(dataset["preds"], dataset["refs"], settings=ev.Settings(empty="nan"))
    written = rep.write_reports(result, tmp_path / "report")
    assert [p.name for p in written] == ["per_case.csv", "summary.json", "summary.md", "dice_hd95.png",
                                         "bland_altman.png"]
    with open(tmp_path / "report" / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * 3 and list(rows[0]) == list(ev.CSV_COLUMNS)
    summary = json.loads((tmp_path / "report" / "summary.json").read_text(encoding="utf-8"))  # strict JSON: NaN -> null
    organ3 = summary["per_class"]["3"]
    assert organ3["hd95"]["n"] == 1 and organ3["hd95"]["n_nan"] == 1 and organ3["flags"]["pred_empty"] == 1
    case_a = next(r for r in result.rows() if r["case"] == "case_a" and r["label"] == 3)
    assert organ3["hd95"]["mean"] == case_a["hd95"]  # the NaN of case_b is left out of the mean
    assert summary["definitions"]["hd95"] == "medpy" and summary["definitions"]["empty_policy"] == "nan"
    assert summary["missing_predictions"] == ["case_c"] and summary["extra_predictions"] == ["case_z"]
    assert Path(summary["cases"][0]["prediction"]).name == "case_a_0000.nii.gz"
    dice = [summary["per_class"][k]["dice"]["mean"] for k in ("1", "2", "3")]
    assert summary["mean_over_classes"]["dice"] == pytest.approx(np.mean(dice))
    markdown = (tmp_path / "report" / "summary.md").read_text(encoding="utf-8")
    assert "pooled" in markdown and "case_c" in markdown
    assert (tmp_path / "report" / "dice_hd95.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "report").glob(".*tmp*"))  # no temporary files left behind


def test_cli_json_table_and_errors(dataset: dict, tmp_path: Path) -> None:
    args = ["evaluate", str(dataset["preds"]), str(dataset["refs"])]
    result = runner.invoke(app, [*args, "--json", "--labels", "1=organ,2", "--hd95", "max", "-o", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["labels"] == {"1": "organ", "2": "label_2"} and summary["definitions"]["hd95"] == "max"
    assert (tmp_path / "r" / "summary.json").is_file()

    table = runner.invoke(app, [*args, "--model", "swin_unet_tiny", "--jobs", "2"])
    assert table.exit_code == 0, table.output
    assert "aorta" in table.stdout and "worst cases" in table.stdout and "pooled" in table.stdout
    assert "case_c" in table.stderr and "case_z" in table.stderr  # unmatched cases are listed

    paper = runner.invoke(app, [*args, "--protocol", "synapse-paper"])
    assert paper.exit_code == 0, paper.output
    assert "stomach" in paper.stdout and "voxels" in paper.stdout
    clash = runner.invoke(app, [*args, "--protocol", "synapse-paper", "--empty", "nan"])
    assert clash.exit_code == 1 and "contradicts" in clash.stderr

    pictures = runner.invoke(app, [*args, "--images", str(dataset["refs"]), "-o", str(tmp_path / "p")])
    assert pictures.exit_code == 0, pictures.output
    drawn = sorted(p.stem for p in (tmp_path / "p" / "overlays").glob("*.png"))
    assert 1 <= len(drawn) <= 3 and set(drawn) <= {"case_a", "case_b", "case_c", "case_d"}
    no_folder = runner.invoke(app, [*args, "--images", str(dataset["refs"])])
    assert no_folder.exit_code == 1 and "give -o" in no_folder.stderr

    missing = runner.invoke(app, ["evaluate", str(tmp_path / "nope"), str(dataset["refs"])])
    assert missing.exit_code == 1 and "not found" in missing.stderr and "Traceback" not in missing.output


def test_synapse_paper_protocol_uses_voxel_units_and_paper_rules(dataset: dict) -> None:
    settings = ev.Settings.synapse_paper()
    result = ev.evaluate(dataset["preds"], dataset["refs"], labels=ev.card_labels(ev.SYNAPSE_CARD),
                         settings=settings)  # fmt: skip
    rows = {(r["case"], r["label"]): r for r in result.rows()}
    assert rows[("case_b", 3)]["dice"] == 0.0 and rows[("case_b", 3)]["hd95"] == 0.0  # missed: (0, 0)
    assert rows[("case_a", 8)]["dice"] == 0.0 and rows[("case_a", 8)]["hd95"] == 0.0  # both empty: (0, 0)
    pred, ref = (a == 1 for a in dataset["arrays"]["case_a"])
    assert rows[("case_a", 1)]["hd95"] == medpy_binary.hd95(pred, ref)  # voxel units, as the papers
    header, row = rep.paper_table(result.summary(), "ours")
    assert header[:3] == ["Method", "DSC", "HD95"] and header[3] == "aorta" and len(row) == 11


@needs_shared
def test_real_label_map_with_its_own_header_equals_medpy(tmp_path: Path) -> None:
    """A real CT label map (non-identity affine, 3 mm voxels) against a shifted copy written like it."""
    ref = read_volume(EXAMPLE_SEG)
    pred = np.roll(ref.array, (1, -1, 2), axis=(0, 1, 2))
    write_volume(tmp_path / "pred.nii.gz", pred, ref)
    labels = {1: "spleen", 2: "kidney_right", 5: "liver", 52: "aorta"}
    result = ev.evaluate(tmp_path / "pred.nii.gz", EXAMPLE_SEG, labels=labels)
    assert [row["class"] for row in result.rows()] == list(labels.values())
    for row in result.rows():
        p, r = pred == row["label"], ref.array == row["label"]
        assert row["dice"] == medpy_binary.dc(p, r)
        assert row["hd95"] == medpy_binary.hd95(p, r, ref.spacing)
        assert row["ref_ml"] == pytest.approx(r.sum() * 27 / 1000)  # 3 mm isotropic voxels


def test_cli_nsd_goes_into_the_reports(dataset: dict, tmp_path: Path) -> None:
    from swinseg.io import read_volume
    from swinseg.metrics import nsd

    args = ["evaluate", str(dataset["preds"]), str(dataset["refs"]), "--nsd", "1.5", "-o", str(tmp_path / "r")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    with open(tmp_path / "r" / "per_case.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    row = next(r for r in rows if r["case"] == "case_a" and r["label"] == "1")
    ref = read_volume(dataset["refs"] / "case_a.nii.gz")
    pred, reference = dataset["arrays"]["case_a"]
    expected = nsd(pred == 1, reference == 1, 1.5, ref.spacing)
    assert float(row["nsd"]) == pytest.approx(expected, rel=1e-5)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert "1.5 mm" in summary["definitions"]["nsd"] and "nsd" in summary["mean_over_classes"]
    plain = runner.invoke(app, args[:3] + ["-o", str(tmp_path / "p")])
    assert "nsd" not in (tmp_path / "p" / "per_case.csv").read_text(encoding="utf-8").splitlines()[0]
    assert plain.exit_code == 0
