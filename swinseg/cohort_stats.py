"""Cohort statistics for papers: bootstrap confidence intervals of mean scores, volume agreement (Bland-Altman,
ICC(3,1)) and the paired comparison of two methods (mean difference with its bootstrap CI, Wilcoxon signed-rank).

Hand-written on numpy; scipy gives only the Wilcoxon signed-rank p-value. NaN values are left out (pairwise for
paired data). Library use:

    from swinseg import cohort_stats
    cohort_stats.bootstrap_mean_ci([0.8, 0.9, 0.85], resamples=1000, seed=0)   # {"mean", "low", "high", ...}
    cohort_stats.bland_altman(pred_ml, ref_ml)                                 # {"bias", "loa_low", ...}
    cohort_stats.icc_3_1([[9, 2], [6, 1], ...])                                # rows = cases, columns = raters
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from swinseg.errors import SwinsegError

if TYPE_CHECKING:
    from swinseg.evaluate import Evaluation

LEVEL = 0.95  # confidence level of every interval
Z_LOA = 1.96  # Bland-Altman limits of agreement: bias ± 1.96 SD of the differences
CI_METRICS = ("dice", "hd95", "nsd")  # metrics with a bootstrap CI of the mean (nsd when it was computed)

DEFINITIONS = {
    "bootstrap_ci": "95% percentile bootstrap interval of the mean over cases (resampling cases with replacement, "
                    "numpy default_rng(seed)); NaN values left out",
    "bland_altman": "volume differences prediction - reference (ml): bias = mean difference, limits of agreement "
                    "= bias ± 1.96 × sample SD (ddof=1)",
    "icc": "ICC(3,1), two-way mixed, consistency, single measurement (Shrout & Fleiss): "
           "(MS_rows - MS_error) / (MS_rows + (k-1) MS_error), cases as rows, prediction and reference as columns",
    "comparison": "per case A - B on the cases both methods scored; mean difference with its 95% percentile "
                  "bootstrap interval; two-sided Wilcoxon signed-rank p-value (scipy, zero differences dropped)",
}


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both values are finite."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise SwinsegError(f"paired statistics need as many values on each side ({x.size} vs {y.size})")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def bootstrap_mean_ci(values: Sequence[float], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean of the finite `values` and its 95% percentile bootstrap interval (`resamples` resamples of the cases
    with replacement, drawn with numpy's default_rng(`seed`): the same seed gives the same interval)."""
    if resamples < 1:
        raise SwinsegError(f"--bootstrap {resamples}: give at least 1 resample")
    finite = _finite(values)
    n = int(finite.size)
    result: dict[str, Any] = {"mean": float(finite.mean()) if n else math.nan, "low": math.nan, "high": math.nan,
                              "n": n, "resamples": int(resamples), "seed": int(seed)}
    if n:
        rng = np.random.default_rng(seed)
        means = finite[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
        tail = 100 * (1 - LEVEL) / 2
        result["low"], result["high"] = (float(v) for v in np.percentile(means, (tail, 100 - tail)))
    return result


def bland_altman(method: Sequence[float], reference: Sequence[float]) -> dict[str, Any]:
    """Bias (mean of method - reference), SD of the differences (ddof=1) and the 95% limits of agreement."""
    x, y = _paired(method, reference)
    diff = x - y
    n = int(diff.size)
    bias = float(diff.mean()) if n else math.nan
    sd = float(diff.std(ddof=1)) if n > 1 else math.nan
    return {"bias": bias, "sd": sd, "loa_low": bias - Z_LOA * sd, "loa_high": bias + Z_LOA * sd, "n": n}


def icc_3_1(table: Sequence[Sequence[float]]) -> float:
    """ICC(3,1) of an n x k table (rows = subjects, columns = raters) from the two-way ANOVA mean squares;
    rows holding a NaN are left out; NaN with fewer than 2 rows or no variance at all."""
    data = np.asarray(table, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] < 2:
        raise SwinsegError(f"ICC needs a table of subjects x at least 2 raters, got shape {data.shape}")
    data = data[np.all(np.isfinite(data), axis=1)]
    n, k = data.shape
    if n < 2:
        return math.nan
    grand = data.mean()
    ss_rows = k * float(((data.mean(axis=1) - grand) ** 2).sum())
    ss_cols = n * float(((data.mean(axis=0) - grand) ** 2).sum())
    ss_error = float(((data - grand) ** 2).sum()) - ss_rows - ss_cols
    ms_rows = ss_rows / (n - 1)
    ms_error = ss_error / ((n - 1) * (k - 1))
    denominator = ms_rows + (k - 1) * ms_error
    return (ms_rows - ms_error) / denominator if denominator > 0 else math.nan


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped); 1.0 when every difference
    is zero, NaN without any difference."""
    from scipy.stats import wilcoxon

    diff = _finite(differences)
    if diff.size == 0:
        return math.nan
    if not np.any(diff):
        return 1.0
    return float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_comparison(a: Sequence[float], b: Sequence[float], resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Method A against method B on the same cases: mean of A - B with its bootstrap CI, the Wilcoxon p-value
    and the means of each side (pairs with a NaN left out)."""
    x, y = _paired(a, b)
    ci = bootstrap_mean_ci(x - y, resamples, seed)
    return {"mean_a": float(x.mean()) if x.size else math.nan, "mean_b": float(y.mean()) if y.size else math.nan,
            "mean_difference": ci["mean"], "low": ci["low"], "high": ci["high"], "n": ci["n"],
            "wilcoxon_p": wilcoxon_p(x - y)}


def _column(rows: list[dict[str, Any]], label: int, metric: str) -> dict[str, float]:
    """Case name -> value of `metric` for `label` (rows as Evaluation.rows gives them)."""
    return {row["case"]: float(row[metric]) for row in rows if row["label"] == label and metric in row}


def evaluation_statistics(evaluation: Evaluation, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per class: bootstrap CIs of the mean Dice, HD95 (and NSD when computed), Bland-Altman and ICC(3,1) of
    the predicted against the reference volumes (ml)."""
    metrics = [m for m in CI_METRICS if m in evaluation.settings.metrics]
    rows = evaluation.rows()
    per_class: dict[str, Any] = {}
    for label, name in evaluation.labels.items():
        pred = _column(rows, label, "pred_ml")
        ref = _column(rows, label, "ref_ml")
        cases = sorted(pred)
        per_class[str(label)] = {
            "name": name,
            "ci": {m: bootstrap_mean_ci(list(_column(rows, label, m).values()), resamples, seed)
                   for m in metrics},
            "volume": {
                "bland_altman": bland_altman([pred[c] for c in cases], [ref[c] for c in cases]),
                "icc_3_1": icc_3_1([[pred[c], ref[c]] for c in cases]),
            },
        }
    definitions = {key: DEFINITIONS[key] for key in ("bootstrap_ci", "bland_altman", "icc")}
    return {"resamples": int(resamples), "seed": int(seed), "level": LEVEL, "definitions": definitions,
            "per_class": per_class}


def compare_evaluations(a: Evaluation, b: Evaluation, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Method A (`a`) against method B (`b`), scored on the same references with the same labels: per class and
    metric, the paired comparison over the cases both scored."""
    if a.labels.keys() != b.labels.keys():
        raise SwinsegError(f"--compare: the two predictions were scored on different labels "
                           f"({sorted(a.labels)} vs {sorted(b.labels)}); give --labels")
    metrics = [m for m in CI_METRICS if m in a.settings.metrics]
    names_a = {r.case.name for r in a.results}
    names_b = {r.case.name for r in b.results}
    common = sorted(names_a & names_b)
    if not common:
        raise SwinsegError(f"--compare: {a.prediction} and {b.prediction} share no scored case")
    rows_a, rows_b = a.rows(), b.rows()
    per_class: dict[str, Any] = {}
    for label, name in a.labels.items():
        entry: dict[str, Any] = {"name": name}
        for metric in metrics:
            col_a, col_b = _column(rows_a, label, metric), _column(rows_b, label, metric)
            entry[metric] = paired_comparison([col_a[c] for c in common], [col_b[c] for c in common], resamples,
                                              seed)
        per_class[str(label)] = entry
    return {"a": str(a.prediction), "b": str(b.prediction), "n_cases": len(common),
            "only_in_a": sorted(names_a - names_b), "only_in_b": sorted(names_b - names_a),
            "resamples": int(resamples), "seed": int(seed), "level": LEVEL,
            "definition": DEFINITIONS["comparison"], "per_class": per_class}
