"""Post-processing of label maps: class subsets and the largest connected component per class."""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from swinseg.errors import SwinsegError
from swinseg.labels import split_list


def parse_classes(spec: str | Iterable[str | int], class_names: Sequence[str]) -> list[int]:
    """Label ids for a subset given as names or ids ("liver,spleen", "1,7" or a list); unknown -> error.

    Names match case-insensitively; background (0) is allowed but has no effect.
    """
    items = split_list(spec if isinstance(spec, str) else [str(s) for s in spec])
    lookup = {name.lower(): index for index, name in enumerate(class_names)}
    ids: list[int] = []
    for item in filter(None, items):
        if item.isdigit() and int(item) < len(class_names):
            ids.append(int(item))
        elif item.lower() in lookup:
            ids.append(lookup[item.lower()])
        else:
            known = ", ".join(f"{i}={name}" for i, name in enumerate(class_names))
            raise SwinsegError(f"--classes: unknown class {item!r}; this model has {known}")
    if not ids:
        raise SwinsegError("--classes: give at least one class name or id")
    return sorted(set(ids))


def keep_classes(labels: np.ndarray, class_ids: Iterable[int]) -> np.ndarray:
    """Set every label not in `class_ids` to background (0), in place; label ids are not renumbered."""
    keep = np.zeros(int(labels.max(initial=0)) + 1, dtype=bool)
    for class_id in class_ids:
        if class_id < keep.size:
            keep[class_id] = True
    keep[0] = True
    labels[~keep[labels]] = 0
    return labels


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Keep only the largest connected component (full connectivity: 8 in 2-D, 26 in 3-D) of each class,
    in place; removed voxels become background. Each class is labelled inside its bounding box only."""
    import scipy.ndimage  # here: a predict call without --keep-largest starts without it

    structure = scipy.ndimage.generate_binary_structure(labels.ndim, labels.ndim)
    for class_id, box in enumerate(scipy.ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        region = labels[box]
        mask = region == class_id
        components, count = scipy.ndimage.label(mask, structure)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            region[mask & (components != sizes.argmax())] = 0
    return labels
