"""Dataset layouts on disk: which files are the cases of a folder, and the train/test split of case names.

Synapse layout (folder DATA): `train_npz/caseXXXX_sliceYYY.npz` (arrays `image` in [0, 1] and `label`, one
axial slice each), `test_vol_h5/caseXXXX.npy.h5` (datasets `image`, `label` of shape (D, H, W)) and the lists
`lists_Synapse/{train,test_vol}.txt` (found in DATA, DATA/lists or beside DATA; without lists every file is
used). nnU-Net/MSD layout: `imagesTr/CASE_0000.nii.gz` (or MSD's `CASE.nii.gz`), `labelsTr/CASE.nii.gz` and
`dataset.json` with the label names (and `channel_names`, which decide the normalisation).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swinseg.config import read_dataset_labels
from swinseg.defaults import SEED
from swinseg.errors import SwinsegError
from swinseg.io import case_name, find_images

LIST_FOLDER = "lists_Synapse"
TRAIN_LIST, TEST_LIST = "train.txt", "test_vol.txt"
TRAIN_FOLDER, TEST_FOLDER = "train_npz", "test_vol_h5"
TEST_SUFFIX = ".npy.h5"
MAX_PROBLEMS_SHOWN = 12


# ---------------------------------------------------------------------------------------------- Synapse


@dataclass
class SynapseDataset:
    """A folder in the Synapse layout; `train_slices` / `test_cases` come from the lists (or the files)."""

    root: Path
    train_slices: list[str]
    test_cases: list[str]
    classes: tuple[str, ...] | None = None

    @property
    def train_dir(self) -> Path:
        return self.root / TRAIN_FOLDER

    @property
    def test_dir(self) -> Path:
        return self.root / TEST_FOLDER


def is_synapse(root: Path) -> bool:
    return (root / TRAIN_FOLDER).is_dir() or (root / TEST_FOLDER).is_dir()


def is_nnunet(root: Path) -> bool:
    return (root / "imagesTr").is_dir()


def _find_lists(root: Path) -> Path | None:
    for folder in (root / LIST_FOLDER, root / "lists" / LIST_FOLDER, root.parent / LIST_FOLDER,
                   root.parent / "lists" / LIST_FOLDER):
        if (folder / TRAIN_LIST).is_file() or (folder / TEST_LIST).is_file():
            return folder
    return None


def _read_list(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def open_synapse(root: str | Path, lists: str | Path | None = None) -> SynapseDataset:
    """Open a Synapse-layout folder; every listed file must exist (all missing ones named in one error).

    `lists`: the folder holding train.txt / test_vol.txt (default: found beside the data, see the module
    docstring); a missing list means every file of that folder. Class names come from a `dataset.json` in
    the folder when there is one (as written by `swinseg preprocess`).
    """
    root = Path(root)
    if not is_synapse(root):
        raise SwinsegError(f"{root}: not a Synapse-layout folder (no {TRAIN_FOLDER}/ or {TEST_FOLDER}/)")
    list_dir = Path(lists) if lists is not None else _find_lists(root)
    if lists is not None and not list_dir.is_dir():
        raise SwinsegError(f"{list_dir}: lists folder not found")
    train = _read_list(list_dir / TRAIN_LIST) if list_dir else None
    test = _read_list(list_dir / TEST_LIST) if list_dir else None
    if train is None:
        train = _stems(root / TRAIN_FOLDER, ".npz")
    if test is None:
        test = _stems(root / TEST_FOLDER, TEST_SUFFIX)
    missing = [f"{TRAIN_FOLDER}/{n}.npz" for n in train if not (root / TRAIN_FOLDER / f"{n}.npz").is_file()]
    missing += [f"{TEST_FOLDER}/{n}{TEST_SUFFIX}" for n in test
                if not (root / TEST_FOLDER / f"{n}{TEST_SUFFIX}").is_file()]
    if missing:
        raise SwinsegError(f"{root}: {len(missing)} listed files missing: {shorten(missing)}")
    if not train:
        raise SwinsegError(f"{root / TRAIN_FOLDER}: no training slices")
    classes = read_dataset_json(root / "dataset.json") if (root / "dataset.json").is_file() else None
    return SynapseDataset(root, train, test, classes)


def _stems(folder: Path, suffix: str) -> list[str]:
    """Names of the files in `folder` ending in `suffix`, without it (hidden temp files skipped), sorted."""
    return sorted(p.name[: -len(suffix)] for p in folder.glob(f"*{suffix}") if not p.name.startswith("."))


def shorten(items: Sequence[str], separator: str = ", ") -> str:
    """The first MAX_PROBLEMS_SHOWN items joined, and how many more there are."""
    shown = separator.join(items[:MAX_PROBLEMS_SHOWN])
    more = len(items) - MAX_PROBLEMS_SHOWN
    return shown + (f"{separator}... ({more} more)" if more > 0 else "")


# ---------------------------------------------------------------------------------------------- nnU-Net


@dataclass(frozen=True)
class CaseFiles:
    name: str
    image: Path
    label: Path


@dataclass
class NnunetDataset:
    """An nnU-Net/MSD folder: cases with an image and a label file, class names from dataset.json."""

    root: Path
    cases: list[CaseFiles]
    classes: tuple[str, ...] | None
    extra_channels: list[str] = dataclasses.field(default_factory=list)  # cases with _0001... (ignored)

    @property
    def names(self) -> list[str]:
        return [case.name for case in self.cases]


def read_dataset_json(path: Path) -> tuple[str, ...]:
    """Class names by label id from a dataset.json (nnU-Net v2 or MSD/v1); ids must be 0..n-1."""

    by_id = read_dataset_labels(path)
    if sorted(by_id) != list(range(len(by_id))):
        raise SwinsegError(f"{path}: label ids must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)}")
    return tuple(by_id.values())


def _case_key(path: Path, label_names: set[str]) -> tuple[str, int]:
    """(case name, channel) of an imagesTr file: CASE_0000.nii.gz -> (CASE, 0); MSD's CASE.nii.gz, or any
    name that has a label file of the same name, -> (CASE, 0)."""

    name = case_name(path)
    match = re.fullmatch(r"(.+)_(\d{4})", name)
    if match is None or name in label_names:
        return name, 0
    return match.group(1), int(match.group(2))


def open_nnunet(root: str | Path) -> NnunetDataset:
    """Discover an nnU-Net/MSD dataset; one SwinsegError names every image without a label, every label
    without an image, and a broken dataset.json."""

    root = Path(root)
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise SwinsegError(f"{root}: not an nnU-Net dataset folder (no imagesTr/)")
    if not labels_dir.is_dir():
        raise SwinsegError(f"{root}: nnU-Net dataset without labelsTr/")
    labels = {case_name(path): path for path in find_images(labels_dir)}
    images: dict[str, Path] = {}
    extra: set[str] = set()
    for path in find_images(images_dir):
        name, channel = _case_key(path, set(labels))
        if channel == 0:
            images[name] = path
        else:
            extra.add(name)
    problems = [f"{images[n].name} has no label labelsTr/{n}.nii.gz" for n in sorted(set(images) - set(labels))]
    problems += [f"labelsTr/{labels[n].name} has no image imagesTr/{n}_0000.nii.gz"
                 for n in sorted(set(labels) - set(images))]
    problems += [f"imagesTr/{n}_0001... without {n}_0000" for n in sorted(extra - set(images))]
    if problems:
        raise SwinsegError(f"{root}: {len(problems)} unpaired files: {shorten(problems)}")
    if not images:
        raise SwinsegError(f"{images_dir}: no images")
    dataset_json = root / "dataset.json"
    classes = read_dataset_json(dataset_json) if dataset_json.is_file() else None
    cases = [CaseFiles(n, images[n], labels[n]) for n in sorted(images)]
    return NnunetDataset(root, cases, classes, sorted(extra))


def split_cases(names: Sequence[str], *, test_fraction: float = 0.2, test_cases: Sequence[str] | None = None,
                seed: int = SEED, held_out: str = "test") -> tuple[list[str], list[str]]:
    """(train, test) case names: `test_cases` as given (all must exist), else a seeded random
    `test_fraction` (at least one case when the fraction is > 0 and there are two cases or more).
    `held_out` names the options in errors: "test" (preprocess: --test-cases) or "val" (train: --val-cases)."""
    names = sorted(names)
    if test_cases is not None:
        unknown = sorted(set(test_cases) - set(names))
        if unknown:
            raise SwinsegError(f"--{held_out}-cases: unknown cases {shorten(unknown)}; known: {shorten(names)}")
        test = sorted(set(test_cases))
    else:
        if not 0.0 <= test_fraction < 1.0:
            raise SwinsegError(f"--{held_out}-fraction must be in [0, 1), got {test_fraction}")
        count = int(round(len(names) * test_fraction))
        if test_fraction > 0 and len(names) > 1:
            count = min(max(count, 1), len(names) - 1)
        order = np.random.default_rng(seed).permutation(len(names))
        test = sorted(names[i] for i in order[:count])
    train = [n for n in names if n not in set(test)]
    if not train:
        raise SwinsegError("no training cases left after the train/test split")
    return train, test


def fold_splits(names: Sequence[str], folds: int, seed: int = SEED) -> list[dict[str, list[str]]]:
    """nnU-Net-style cross-validation: the cases shuffled with `seed` and dealt into `folds` disjoint
    validation sets; fold k trains on the others. The same for every fold of a run (it depends on nothing else)."""
    names = sorted(names)
    if not 2 <= folds <= len(names):
        raise SwinsegError(f"--folds {folds}: must be between 2 and the number of cases ({len(names)})")
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    return [{"train": sorted(n for n in names if n not in order[k::folds]), "val": sorted(order[k::folds])}
            for k in range(folds)]


def check_splits(splits: object, names: Sequence[str], where: str) -> list[dict[str, list[str]]]:
    """A splits.json read back: a list of {"train": [...], "val": [...]} over known, disjoint cases."""
    known = set(names)
    if not isinstance(splits, list) or not splits or not all(
            isinstance(s, dict) and isinstance(s.get("train"), list) and isinstance(s.get("val"), list)
            for s in splits):
        raise SwinsegError(f"{where}: expected a list of {{\"train\": [...], \"val\": [...]}} folds")
    for k, fold in enumerate(splits):
        unknown = sorted((set(fold["train"]) | set(fold["val"])) - known)
        if unknown:
            raise SwinsegError(f"{where}: fold {k} names unknown cases {shorten(unknown)}")
        if set(fold["train"]) & set(fold["val"]) or not fold["val"] or not fold["train"]:
            raise SwinsegError(f"{where}: fold {k} needs training and validation cases, and no case in both")
    return [{"train": sorted(map(str, s["train"])), "val": sorted(map(str, s["val"]))} for s in splits]
