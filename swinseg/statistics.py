"""Per-class statistics of a label map on its scan: size, volume, intensities under the mask (HU for CT),
centroid in patient coordinates, bounding box, and whether the structure touches the scan's border (then it is
probably cut off by the field of view)."""
from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from swinseg.io import Volume, atomic_output

CSV_COLUMNS = ("case", "label", "name", "voxels", "volume_ml", "mean", "std", "median", "min", "max",
               "centroid_x_mm", "centroid_y_mm", "centroid_z_mm", "touches_border")


def class_statistics(scan: Volume, labels: np.ndarray, class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per foreground class present in `labels` (the scan's array order and grid).

    `centroid_mm`: the mean voxel position in patient coordinates (ITK/DICOM LPS, mm, x y z).
    `bbox`: first and last voxel index per axis, in (x, y, z) order as viewers show them.
    `touches_border`: the class has a voxel on a face of the scan's grid.
    """
    from scipy import ndimage  # here: only --statistics needs it

    labels = np.asarray(labels)
    present = [int(k) for k in np.unique(labels) if k > 0]
    if not present:
        return []
    boxes = ndimage.find_objects(labels.astype(np.int64, copy=False), max_label=max(present))
    voxel_ml = float(np.prod(scan.spacing)) / 1000.0
    rows = []
    for label in present:  # each class on its bounding box: no full-volume float copies
        box = boxes[label - 1]
        inside = labels[box] == label
        values = scan.array[box][inside].astype(np.float64)
        offsets = np.array([s.start for s in box], dtype=np.float64)
        centre = np.array([coords.mean() for coords in np.nonzero(inside)]) + offsets
        rows.append({
            "label": label,
            "name": class_names[label] if label < len(class_names) else f"label_{label}",
            "voxels": int(values.size),
            "volume_ml": round(int(values.size) * voxel_ml, 4),
            "mean": float(values.mean()), "std": float(values.std()), "median": float(np.median(values)),
            "min": float(values.min()), "max": float(values.max()),
            "centroid_mm": [round(v, 3) for v in index_to_patient(scan, centre)],
            "bbox": {"first": [s.start for s in box][::-1], "last": [s.stop - 1 for s in box][::-1]},
            "touches_border": any(s.start == 0 or s.stop == n for s, n in zip(box, labels.shape)),
        })
    return rows


def index_to_patient(scan: Volume, index: Sequence[float]) -> list[float]:
    """A continuous voxel index in array order (z, y, x) -> patient coordinates (x, y, z) mm, as ITK maps it."""
    index_xyz = np.asarray(index, dtype=np.float64)[::-1]
    spacing_xyz = np.asarray(scan.spacing, dtype=np.float64)[::-1]
    point = np.asarray(scan.origin) + scan.direction_matrix() @ (index_xyz * spacing_xyz)
    return [float(v) for v in point]


def write_statistics_json(path: str | Path, case: str, rows: list[dict[str, Any]],
                          qc: dict[str, Any] | None = None) -> None:
    """One case's statistics as JSON (atomically), with its swinseg.qc block when given."""
    with atomic_output(path) as tmp:
        content = {"case": case, "classes": rows, **({"qc": qc} if qc is not None else {})}
        tmp.write_text(json.dumps(content, indent=2), encoding="utf-8")


def write_statistics_csv(path: str | Path, cases: dict[str, list[dict[str, Any]]]) -> None:
    """A row per case and class (atomically)."""
    with atomic_output(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for case, rows in cases.items():
            for row in rows:
                values = [row[key] for key in CSV_COLUMNS[1:10]]
                centroid = (list(row["centroid_mm"]) + ["", ""])[:3]  # 2-D images have no z
                writer.writerow([case, *(_csv(v) for v in values), *centroid, row["touches_border"]])


def _csv(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) and math.isfinite(value) else value
