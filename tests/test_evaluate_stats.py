"""`swinseg evaluate` statistics for papers: bootstrap CIs, volume agreement, the paired comparison of two methods."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon
from typer.testing import CliRunner

from swinseg import cohort_stats
from swinseg import evaluate as ev
from swinseg.cli import app
from swinseg.io import Volume, write_volume

SHAPE = (6, 20, 20)
SPACING = (2.0, 1.0, 1.0)
runner = CliRunner()


def _write(path: Path, array: np.ndarray) -> None:
    like = Volume(np.zeros(SHAPE, np.uint8), SPACING, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_volume(path, array.astype(np.uint8), like)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> dict[str, Path]:
    """Six cases with organs 1 and 2 of varying size; method A is close to the references, method B is worse."""
    root = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(0)
    for i in range(6):
        ref = np.zeros(SHAPE, np.uint8)
        size = 4 + i
        ref[1:5, 2:2 + size, 2:2 + size] = 1
        ref[2:4, 14:18, 12:12 + 2 + i % 3] = 2
        a = np.roll(ref, int(rng.integers(0, 2)), axis=2)
        b = np.roll(ref, 2, axis=1)
        b[b == 2] = 0 if i == 0 else 2
        _write(root / "refs" / f"case{i}.nii.gz", ref)
        _write(root / "a" / f"case{i}.nii.gz", a)
        _write(root / "b" / f"case{i}.nii.gz", b)
    return {"refs": root / "refs", "a": root / "a", "b": root / "b"}


def test_summary_statistics_agree_with_the_per_case_rows(cohort: dict[str, Path]) -> None:
    result = ev.evaluate(cohort["a"], cohort["refs"], settings=ev.Settings(nsd_tolerance=1.0))
    statistics = result.summary(bootstrap=300, seed=5)["statistics"]
    assert statistics["resamples"] == 300 and statistics["seed"] == 5
    rows = result.rows()
    for label in (1, 2):
        entry = statistics["per_class"][str(label)]
        assert set(entry["ci"]) == {"dice", "hd95", "nsd"}
        mine = [row for row in rows if row["label"] == label]
        dice = [row["dice"] for row in mine]
        assert entry["ci"]["dice"] == cohort_stats.bootstrap_mean_ci(dice, 300, 5)
        for metric in ("dice", "hd95", "nsd"):
            ci = entry["ci"][metric]
            assert ci["low"] <= ci["mean"] <= ci["high"]
        pred = np.array([row["pred_ml"] for row in mine])
        ref = np.array([row["ref_ml"] for row in mine])
        agreement = entry["volume"]["bland_altman"]
        assert agreement["bias"] == pytest.approx(np.mean(pred - ref))
        assert agreement["loa_high"] - agreement["loa_low"] == pytest.approx(2 * 1.96 * np.std(pred - ref, ddof=1))
        assert entry["volume"]["icc_3_1"] == pytest.approx(cohort_stats.icc_3_1(np.stack([pred, ref], axis=1)))
    assert "statistics" not in result.summary(bootstrap=0)
    assert set(result.summary(bootstrap=10)["statistics"]["per_class"]["1"]["ci"]) == {"dice", "hd95", "nsd"}
    plain = ev.evaluate(cohort["a"], cohort["refs"]).summary(bootstrap=10)["statistics"]
    assert set(plain["per_class"]["1"]["ci"]) == {"dice", "hd95"}  # NSD only with a tolerance


def test_cli_compare_writes_the_paired_comparison(cohort: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["evaluate", str(cohort["a"]), str(cohort["refs"]), "--compare", str(cohort["b"]), "--nsd", "1",
            "--bootstrap", "200", "--seed", "3", "-o", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    comparison = summary["comparison"]
    assert comparison["n_cases"] == 6 and comparison["resamples"] == 200 and comparison["seed"] == 3
    score_a = ev.evaluate(cohort["a"], cohort["refs"]).rows()
    score_b = ev.evaluate(cohort["b"], cohort["refs"]).rows()
    for label in ("1", "2"):
        a = np.array([row["dice"] for row in score_a if row["label"] == int(label)])
        b = np.array([row["dice"] for row in score_b if row["label"] == int(label)])
        dice = comparison["per_class"][label]["dice"]
        assert dice["mean_difference"] == pytest.approx(np.mean(a - b))
        assert dice["low"] <= dice["mean_difference"] <= dice["high"]
        assert dice["wilcoxon_p"] == pytest.approx(wilcoxon(a - b).pvalue)
        assert dice["mean_difference"] > 0  # A is the better method
        assert set(comparison["per_class"][label]) == {"name", "dice", "hd95", "nsd"}
    assert summary["statistics"]["per_class"]["1"]["ci"]["dice"]["resamples"] == 200
    markdown = (out / "summary.md").read_text(encoding="utf-8")
    assert "## Paired comparison: A - B" in markdown and "Wilcoxon" in markdown
    assert "## Means with 95% bootstrap confidence intervals (200 resamples, seed 3)" in markdown
    assert "ICC(3,1)" in markdown and "limits of agreement" in markdown
    assert (out / "bland_altman.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "A - B" in result.stdout and "ICC(3,1)" in result.stdout and "95% LoA" in result.stdout

    refused = runner.invoke(app, [*args[:5], "--bootstrap", "0"])
    assert refused.exit_code == 1 and "--compare" in refused.output
