"""`swinseg preprocess`: an nnU-Net/MSD dataset written in the Synapse layout (train_npz/ slices, test_vol_h5/
volumes, lists), resumable case by case."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from swinseg.config import ModelCard
from swinseg.defaults import SEED
from swinseg.errors import SwinsegError
from swinseg.io import atomic_output
from swinseg.preprocess import (
    scale_intensities,
)
from swinseg.training.cases import Progress, load_case, set_bounds
from swinseg.training.datasets import (
    LIST_FOLDER,
    TEST_FOLDER,
    TEST_LIST,
    TEST_SUFFIX,
    TRAIN_FOLDER,
    TRAIN_LIST,
    open_nnunet,
    shorten,
    split_cases,
)
from swinseg.training.samples import LoadedCase


@dataclass
class PreprocessReport:
    out_dir: Path
    train_cases: list[str]
    test_cases: list[str]
    train_slices: int
    skipped: list[str]  # cases already converted by an earlier (interrupted) run with the same settings
    extra_channels: list[str]


def preprocess_dataset(in_dir: str | Path, out_dir: str | Path, card: ModelCard, *, test_fraction: float = 0.2,
                       test_cases: Sequence[str] | None = None, seed: int = SEED,
                       progress: Progress | None = None) -> PreprocessReport:
    """Convert an nnU-Net/MSD dataset into the Synapse layout under `out_dir`.

    Each case is oriented to the card's orientation and normalised with its preprocessing (CT window);
    training cases become one `train_npz/CASE_sliceZZZ.npz` per axial slice (image float32 in [0, 1], label
    uint8), test cases `test_vol_h5/CASE.npy.h5` (image, label (D, H, W); attribute `spacing` (z, y, x) mm);
    then `lists_Synapse/{train,test_vol}.txt` and a `dataset.json` with the class names. Every file is
    written atomically; a case finished by an earlier run with the same settings is skipped, so an
    interrupted run resumes. Bad cases are all reported at the end in one SwinsegError (no lists written).
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if out_dir.resolve() == in_dir.resolve() or in_dir.resolve() in out_dir.resolve().parents:
        raise SwinsegError(f"{out_dir}: choose an output folder outside the input dataset {in_dir}")
    if card.preprocessing.spacing is not None:
        raise SwinsegError(f"card {card.name!r} resamples to a target spacing; `swinseg preprocess` writes the "
                           "published Synapse layout (whole slices, no spacing): train on the nnU-Net dataset "
                           "directly instead")
    dataset = open_nnunet(in_dir)
    classes = dataset.classes or card.classes
    train, test = split_cases(dataset.names, test_fraction=test_fraction, test_cases=test_cases, seed=seed)
    prep = card.preprocessing
    settings = {"preprocessing": prep.to_dict(), "source": str(in_dir.resolve())}
    by_name = {case.name: case for case in dataset.cases}
    slice_names: dict[str, list[str]] = {}
    problems, skipped = [], []
    order = [(name, "train") for name in train] + [(name, "test") for name in test]
    for done, (name, role) in enumerate(order):
        if progress:
            progress(done, len(order), name)
        marker = out_dir / ".swinseg" / f"{name}.json"
        expected = dict(settings, role=role)
        previous = _read_marker(marker)
        if previous is not None and {k: previous.get(k) for k in expected} == expected and all(
            path.is_file() for path in _case_outputs(out_dir, name, previous.get("slices", []), role)
        ):
            slice_names[name] = previous.get("slices", [])
            skipped.append(name)
            continue
        try:
            case = load_case(by_name[name], prep, len(classes))
        except SwinsegError as error:
            problems.append(str(error))
            continue
        set_bounds([case], prep)
        if role == "train":
            slice_names[name] = _write_slices(out_dir / TRAIN_FOLDER, case)
        else:
            _write_h5(out_dir / TEST_FOLDER / f"{name}{TEST_SUFFIX}", case)
        _write_text(marker, json.dumps(dict(expected, slices=slice_names.get(name, [])), indent=1))
    if progress:
        progress(len(order), len(order), "")
    if problems:
        raise SwinsegError(f"{in_dir}: {len(problems)} bad cases (nothing listed; fix them and rerun, finished "
                           f"cases are kept): {shorten(problems, '; ')}")
    train_slices = [s for name in train for s in slice_names[name]]
    _write_text(out_dir / LIST_FOLDER / TRAIN_LIST, "".join(f"{s}\n" for s in train_slices))
    _write_text(out_dir / LIST_FOLDER / TEST_LIST, "".join(f"{n}\n" for n in test))
    labels = {name: i for i, name in enumerate(classes)}
    _write_text(out_dir / "dataset.json", json.dumps({"labels": labels, "swinseg": settings,
                                                      "train": train, "test": test}, indent=2))
    return PreprocessReport(out_dir, train, test, len(train_slices), skipped, dataset.extra_channels)


def _case_outputs(out_dir: Path, name: str, slices: list[str], role: str) -> list[Path]:
    if role == "train":
        return [out_dir / TRAIN_FOLDER / f"{s}.npz" for s in slices]
    return [out_dir / TEST_FOLDER / f"{name}{TEST_SUFFIX}"]


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_text(path: Path, text: str) -> None:

    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _write_slices(folder: Path, case: LoadedCase) -> list[str]:

    names = []
    for z, (raw, label) in enumerate(zip(case.image, case.label)):
        name = f"{case.name}_slice{z:03d}"
        with atomic_output(folder / f"{name}.npz") as tmp, open(tmp, "wb") as handle:
            np.savez(handle, image=scale_intensities(raw, *case.bounds), label=label)
        names.append(name)
    return names


def _write_h5(path: Path, case: LoadedCase) -> None:
    import h5py


    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as data:
            data.create_dataset("image", data=case.normalized(), compression="gzip", compression_opts=1)
            data.create_dataset("label", data=case.label, compression="gzip", compression_opts=1)
            if case.spacing is not None:
                data.attrs["spacing"] = np.asarray(case.spacing, dtype=np.float64)
