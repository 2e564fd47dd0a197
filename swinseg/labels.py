"""Label ids, names and maps as users give them (torch-free, so the CLI can use it): comma lists, the
`--labels` grammar shared by evaluate and overlay, and the check that an array is a label map."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from swinseg.errors import SwinsegError


def split_list(values: str | Iterable[str] | None) -> list[str]:
    """Items of comma-separated option values ("a,b" or a repeated option), stripped, empty items dropped."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [item.strip() for value in values for item in str(value).split(",") if item.strip()]


def parse_labels(values: str | Iterable[str], option: str = "--labels") -> dict[int, str | None]:
    """`--labels` -> {label id: name or None}. Each item is an id ("5"), an id with its name ("5=aorta") or a
    bare name, which names the label of its position in the list ("liver,spleen" = 1=liver, 2=spleen)."""
    labels: dict[int, str | None] = {}
    for position, item in enumerate(split_list(values), start=1):
        key, sep, name = (part.strip() for part in item.partition("="))
        if sep and (not key.isdigit() or not name):
            raise SwinsegError(f"{option}: {item!r} is not ID=name (like 5=aorta)")
        if not sep and not key.lstrip("-").isdigit():
            key, name = str(position), key
        label = int(key)
        if label <= 0:
            raise SwinsegError(f"{option}: label ids must be positive (0 is background), got {label}")
        if label in labels:
            raise SwinsegError(f"{option}: label {label} is given twice ({item!r}; names stand for 1, 2, ... by "
                               "position)")
        labels[label] = name or None
    if not labels:
        raise SwinsegError(f"{option}: give label ids or names, like 1,2 or 1=liver,5=aorta or liver,spleen")
    return labels


def label_map(array: np.ndarray, where: str | Path) -> np.ndarray:
    """`array` as an integer label map: bool as uint8, floats only when every value is a whole number;
    SwinsegError naming `where` for anything else or for negative values."""
    if array.dtype == bool:
        return array.view(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.rint(array)):
            raise SwinsegError(f"{where}: not a label map (non-integer values); give an integer label image")
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise SwinsegError(f"{where}: not a label map (dtype {array.dtype})")
    if array.size and array.min() < 0:
        raise SwinsegError(f"{where}: not a label map (negative values; is it the scan?)")
    return array
