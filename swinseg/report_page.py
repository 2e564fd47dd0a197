"""The review page: one self-contained static HTML file for a folder of masks (`swinseg report`).

A cohort table (case, per-class volumes in ml, the QC verdict and score of `<mask>_statistics.json` when it has a
`qc` block, Dice/HD95 against references), flagged cases (QC fail, then review) first, sortable by any column;
a click on a case opens its slice viewer (axial slices in the radiological view, the mask drawn in the overlay
colours of swinseg.overlay at an adjustable opacity), its QC reasons and per-class statistics.

Every picture is embedded as a data URI (scan slices JPEG, masks PNG, at most SLICE_PX pixels a side): the page
needs no server and no network, and its Content-Security-Policy forbids both. Everything read from files (names,
paths, QC reasons) reaches the page as escaped text: the table through html.escape, the viewer through a JSON
block (with <, > and & as \\u escapes) that the script puts into the page with textContent only.
"""
from __future__ import annotations

import base64
import html
import io as bytes_io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from swinseg import __version__, metrics
from swinseg.errors import SwinsegError
from swinseg.io import (
    Volume,
    atomic_output,
    case_name,
    check_same_geometry,
    find_images,
    oriented_spacing,
    read_volume,
    to_orientation,
)
from swinseg.labels import label_map
from swinseg.overlay import dataset_label_names, label_color
from swinseg.report_assets import page_html
from swinseg.statistics import class_statistics

SLICE_PX = 256  # longest side of a slice picture in pixels
MAX_SLICES = 96  # default cap on the slices per case (evenly spaced when a scan has more)
JPEG_QUALITY = 85
SIDE_FILES = ("_probabilities", "_preview")  # what `predict` writes beside a mask, that is not a mask
VERDICT_ORDER = {"fail": 0, "review": 1, "ok": 2}  # flagged first; cases without a QC block last


@dataclass
class ReviewCase:
    """One mask with what the page shows of it."""

    name: str
    mask: Path
    scan: Path | None = None
    reference: Path | None = None
    volumes_ml: dict[int, float] = field(default_factory=dict)
    qc: dict[str, Any] | None = None
    statistics: list[dict[str, Any]] = field(default_factory=list)
    statistics_computed: bool = False  # computed here on the scan (no statistics file): names filled in later
    scores: dict[int, dict[str, float]] = field(default_factory=dict)  # label -> {"dice", "hd95"}
    slices: list[int] = field(default_factory=list)
    scan_images: list[str] = field(default_factory=list)
    mask_images: list[str] = field(default_factory=list)
    start: int = 0  # the slice shown first (the one with the most foreground)

    @property
    def rank(self) -> int:
        verdict = (self.qc or {}).get("verdict")
        return VERDICT_ORDER.get(verdict, len(VERDICT_ORDER)) if isinstance(verdict, str) else len(VERDICT_ORDER)

    @property
    def flagged(self) -> bool:
        """QC said fail or review."""
        return self.rank < VERDICT_ORDER["ok"]


def find_masks(masks: str | Path) -> list[Path]:
    """A mask file, or the masks in a folder (the probability maps and previews predict writes beside them left
    out), sorted by name."""
    masks = Path(masks)
    if not masks.exists():
        raise SwinsegError(f"{masks}: masks not found")
    if masks.is_file():
        return [masks]
    found = [p for p in find_images(masks) if not case_name(p).endswith(SIDE_FILES)]
    if not found:
        raise SwinsegError(f"{masks}: no masks found")
    return found


def match_by_case(masks: Sequence[Path], source: str | Path | None, option: str) -> dict[str, Path]:
    """Mask case name -> its file in `source` (a file for a single mask, or a folder matched by case name, with
    nnU-Net's `_0000` channel suffix ignored); masks without one are left out."""
    if source is None:
        return {}
    source = Path(source)
    if not source.exists():
        raise SwinsegError(f"{option} {source}: not found")
    if source.is_file():
        if len(masks) != 1:
            raise SwinsegError(f"{option} {source}: a single file goes with a single mask; give a folder")
        return {case_name(masks[0]): source}
    files = {case_name(p, strip_channel=True): p for p in find_images(source)}
    return {case_name(m): files[key] for m in masks
            if (key := case_name(m)) in files or (key := case_name(m, strip_channel=True)) in files}


def read_statistics(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The class rows and the QC block of a `<mask>_statistics.json` ([] and None without the file)."""
    if not path.is_file():
        return [], None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SwinsegError(f"{path}: not a readable statistics file ({error})") from error
    if not isinstance(data, dict) or not isinstance(data.get("classes", []), list):
        raise SwinsegError(f"{path}: not a swinseg statistics file (no 'classes' list)")
    qc = data.get("qc")
    if qc is not None and not (isinstance(qc, dict) and isinstance(qc.get("reasons", []), list)):
        raise SwinsegError(f"{path}: 'qc' must be an object with verdict, score and a reasons list")
    return [row for row in data.get("classes", []) if isinstance(row, dict)], qc


def statistics_file(mask: Path) -> Path:
    """`mask.nii.gz` -> `mask_statistics.json` (as `predict --statistics` names it)."""
    return mask.with_name(f"{case_name(mask)}_statistics.json")


def window_of(image: np.ndarray) -> tuple[float, float]:
    """Display window: -125..275 HU for CT-like scans (minimum below -500), else the 0.5-99.5 percentiles."""
    if float(image.min()) < -500:
        return -125.0, 275.0
    low, high = (float(v) for v in np.percentile(image, (0.5, 99.5)))
    return low, max(high, low + 1e-6)


def _data_uri(picture: Any, kind: str) -> str:
    buffer = bytes_io.BytesIO()
    if kind == "jpeg":
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        picture.save(buffer, format="PNG", optimize=True)
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def slice_size(shape: Sequence[int], spacing: Sequence[float]) -> tuple[int, int]:
    """(height, width) in pixels of a slice of `shape` (y, x) and `spacing` mm: the physical aspect, the longest
    side as many pixels as the slice has along its longest axis, at most SLICE_PX (the browser scales it up)."""
    height_mm, width_mm = shape[0] * float(spacing[0]), shape[1] * float(spacing[1])
    scale = min(SLICE_PX, max(shape[0], shape[1])) / max(height_mm, width_mm)
    return max(1, round(height_mm * scale)), max(1, round(width_mm * scale))


def render_slices(case: ReviewCase, labels: np.ndarray, scan: np.ndarray | None, spacing: Sequence[float],
                  max_slices: int) -> None:
    """Fill the case's slice pictures: `labels` and `scan` are (z, y, x) in the radiological view."""
    from PIL import Image

    depth = labels.shape[0]
    indices = list(range(depth)) if depth <= max_slices else sorted({int(round(v)) for v in
                                                                    np.linspace(0, depth - 1, max_slices)})
    size = slice_size(labels.shape[1:], spacing[-2:])
    lut = np.zeros((max(int(labels.max()), 0) + 1, 4), np.uint8)
    for label in range(1, lut.shape[0]):
        lut[label, :3] = np.rint(label_color(label) * 255)
        lut[label, 3] = 255
    window = window_of(scan) if scan is not None else None
    for z in indices:
        layer = Image.fromarray(lut[labels[z]], mode="RGBA").resize(size[::-1], Image.Resampling.NEAREST)
        case.mask_images.append(_data_uri(layer, "png"))
        if scan is not None and window is not None:
            grey = np.clip((scan[z].astype(np.float32) - window[0]) / (window[1] - window[0]), 0.0, 1.0)
            picture = Image.fromarray(np.rint(grey * 255).astype(np.uint8), mode="L")
            case.scan_images.append(_data_uri(picture.resize(size[::-1], Image.Resampling.BILINEAR), "jpeg"))
    case.slices = indices
    foreground = [int(np.count_nonzero(labels[z])) for z in indices]
    case.start = int(np.argmax(foreground)) if any(foreground) else len(indices) // 2


def load_case(case: ReviewCase, class_names: dict[int, str], max_slices: int) -> None:
    """Read the mask (and scan), fill volumes, statistics (from the JSON, else computed on the scan) and slices."""
    mask = read_volume(case.mask, dataset="label")
    labels = label_map(mask.array, case.mask)
    voxel_ml = float(np.prod(mask.spacing)) / 1000.0 if mask.ndim == 3 else math.nan
    counts = np.bincount(labels.ravel().astype(np.int64))
    case.volumes_ml = {int(k): float(n) * voxel_ml for k, n in enumerate(counts) if k > 0 and n}
    case.statistics, case.qc = read_statistics(statistics_file(case.mask))
    score_reference(case, mask, labels)
    scan = None
    if case.scan is not None:
        scan = read_volume(case.scan)
        try:
            check_same_geometry(scan, mask)
        except SwinsegError as error:
            raise SwinsegError(f"--images: {error}") from error
        if not case.statistics:
            names = [class_names.get(k, f"label_{k}") for k in range(int(labels.max(initial=0)) + 1)]
            case.statistics, case.statistics_computed = class_statistics(scan, labels, names), True
    if mask.ndim == 3:
        arrays = [to_orientation(volume, "LPS")[0] for volume in (mask, *([scan] if scan is not None else []))]
        arrays[0] = label_map(arrays[0], case.mask)
        spacing = oriented_spacing(mask, "LPS")
    else:
        arrays = [labels[np.newaxis]] + ([scan.array[np.newaxis]] if scan is not None else [])
        spacing = mask.spacing
    render_slices(case, arrays[0], arrays[1] if len(arrays) > 1 else None, spacing, max_slices)


def class_names_for(cases: Sequence[ReviewCase], given: dict[int, str] | None) -> dict[int, str]:
    """{label: name} of every label shown (in a mask or a reference, or given): `given` (-m/--labels/
    --dataset-json) first, then the names in the statistics files, then an nnU-Net dataset.json beside the masks,
    else `label_N`."""
    present = sorted({label for case in cases for label in (*case.volumes_ml, *case.scores)} | set(given or {}))
    from_files: dict[int, str] = {}
    for case in cases:
        for row in [] if case.statistics_computed else case.statistics:
            if isinstance(row.get("label"), int) and isinstance(row.get("name"), str):
                from_files.setdefault(row["label"], row["name"])
    beside = (dataset_label_names(cases[0].mask) or {}) if cases else {}
    names = {}
    for label in present:
        name = (given or {}).get(label) or from_files.get(label) or beside.get(label)
        names[label] = str(name) if name else f"label_{label}"
    return names


def score_reference(case: ReviewCase, mask: Volume, labels: np.ndarray) -> None:
    """Dice and HD95 of each label in the mask or its reference (medpy definitions, mm, as `swinseg evaluate`
    computes them by default)."""
    if case.reference is None:
        return
    reference = read_volume(case.reference, dataset="label")
    try:
        check_same_geometry(mask, reference)
    except SwinsegError as error:
        raise SwinsegError(f"--reference: {error}") from error
    scores = metrics.score_labels(labels, label_map(reference.array, case.reference), None, reference.spacing)
    case.scores = {label: {"dice": s.dice, "hd95": s.hd95} for label, s in scores.items()}


def fill_absent_scores(cases: Sequence[ReviewCase], labels: Sequence[int]) -> None:
    """Labels in neither the mask nor the reference of a case score as both empty (Dice 1, HD95 0), as evaluate's
    default empty-mask policy has it."""
    both_empty = metrics.empty_scores(0, 0, "worst", 0.0)
    for case in cases:
        if case.reference is not None:
            for label in labels:
                case.scores.setdefault(label, {"dice": both_empty.dice, "hd95": both_empty.hd95})


def build_review(masks: str | Path, *, images: str | Path | None = None, reference: str | Path | None = None,
                 class_names: dict[int, str] | None = None, max_slices: int = MAX_SLICES,
                 progress: Any = None) -> tuple[list[ReviewCase], dict[int, str]]:
    """Read every mask (with its scan, statistics and reference) into ReviewCases, flagged cases first;
    `progress(done, total, name)` after each case."""
    if max_slices < 1:
        raise SwinsegError(f"--max-slices must be at least 1, got {max_slices}")
    files = find_masks(masks)
    scans = match_by_case(files, images, "--images")
    references = match_by_case(files, reference, "--reference")
    cases = [ReviewCase(case_name(f), f, scans.get(case_name(f)), references.get(case_name(f))) for f in files]
    for done, case in enumerate(cases, start=1):
        load_case(case, class_names or {}, max_slices)
        if progress:
            progress(done, len(cases), case.name)
    names = class_names_for(cases, class_names)
    for case in cases:
        for row in case.statistics if case.statistics_computed else []:
            row["name"] = names.get(row["label"], row["name"])
    fill_absent_scores(cases, list(names))
    cases.sort(key=lambda case: (case.rank, case.name))
    return cases, names


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _cell(value: float | None, digits: int) -> str:
    if value is None:
        return '<td class="num" data-sort=""></td>'
    return f'<td class="num" data-sort="{value!r}">{value:.{digits}f}</td>'


def cohort_table(cases: Sequence[ReviewCase], names: dict[int, str]) -> str:
    """The cohort table's HTML: a header cell per column, a row per case (all text escaped)."""
    with_scores = any(case.scores for case in cases)
    headers = [("case", "text"), ("QC", "verdict"), ("QC score", "num")]
    headers += [(f"{name} (ml)", "num") for name in names.values()]
    if with_scores:
        headers += [(f"{name} {metric}", "num") for name in names.values() for metric in ("Dice", "HD95 (mm)")]
    head = "".join(f'<th data-type="{kind}" title="sort by {html.escape(title)}">{html.escape(title)}</th>'
                   for title, kind in headers)
    rows = []
    for index, case in enumerate(cases):
        qc = case.qc or {}
        verdict = qc.get("verdict")
        verdict_text = html.escape(str(verdict)) if verdict is not None else ""
        cells = [f'<td data-sort="{html.escape(case.name)}">{html.escape(case.name)}</td>',
                 f'<td class="verdict {verdict_text}" data-sort="{case.rank}">{verdict_text}</td>',
                 _cell(_number(qc.get("score")), 3)]
        cells += [_cell(_number(case.volumes_ml.get(label, 0.0)), 2) for label in names]
        if with_scores:
            for label in names:
                score = case.scores.get(label, {})
                cells += [_cell(_number(score.get("dice")), 3), _cell(_number(score.get("hd95")), 2)]
        flagged = " flagged" if case.flagged else ""
        rows.append(f'<tr class="case{flagged}" data-case="{index}" tabindex="0">{"".join(cells)}</tr>')
    return f'<table id="cohort"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def page_data(cases: Sequence[ReviewCase], names: dict[int, str]) -> dict[str, Any]:
    """What the viewer script reads: classes with colours, and per case its pictures, QC and statistics."""
    def hex_color(label: int) -> str:
        return "#" + "".join(f"{int(round(c * 255)):02x}" for c in label_color(label))

    return {
        "classes": [{"label": label, "name": name, "color": hex_color(label)} for label, name in names.items()],
        "cases": [{
            "name": case.name, "mask": str(case.mask), "scan": str(case.scan) if case.scan else None,
            "reference": str(case.reference) if case.reference else None, "qc": case.qc,
            "labels": list(case.volumes_ml), "statistics": case.statistics,
            "slices": case.slices, "start": case.start, "scan_images": case.scan_images,
            "mask_images": case.mask_images,
        } for case in cases],
    }


def script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: no <, > or & characters, NaN/inf as null."""
    from swinseg.evaluate_report import json_safe

    text = json.dumps(json_safe(data), allow_nan=False, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(cases: Sequence[ReviewCase], names: dict[int, str], masks: str | Path) -> str:
    """The whole HTML page."""
    flagged = sum(case.flagged for case in cases)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    plural = "" if len(cases) == 1 else "s"
    subtitle = (f"{len(cases)} case{plural} from {masks}; {flagged} flagged by QC; swinseg {__version__}; "
                f"{created}. Click a column header to sort, a row to open the case.")
    return page_html(title="swinseg review", subtitle=html.escape(subtitle),
                     table=cohort_table(cases, names), data=script_json(page_data(cases, names)))


def write_review(masks: str | Path, output: str | Path, **options: Any) -> tuple[Path, list[ReviewCase]]:
    """Build the review of `masks` (options as build_review) and write it to `output` (.html, atomically)."""
    output = Path(output)
    if output.suffix.lower() not in (".html", ".htm"):
        raise SwinsegError(f"-o {output}: the review is an HTML page; name it *.html")
    cases, names = build_review(masks, **options)
    with atomic_output(output) as tmp:
        tmp.write_text(render_page(cases, names, masks), encoding="utf-8")
    return output, cases
