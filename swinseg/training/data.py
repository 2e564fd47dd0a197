"""Training inputs: the cases of a dataset folder (swinseg.training.datasets) read through swinseg.preprocess exactly as
predict reads scans (orientation, plane), the samples the network trains on and the held-out volumes it is
validated on. What to do with the data (target spacing, plane, intensities) is decided by swinseg.plan from the
cases read here; this module builds what it is told, from the cases (swinseg.training.cases) and the
sample sources (swinseg.training.samples).

With a target spacing the slices are resampled to it once at load time and training samples are random img_size
crops, a share of them centred on a voxel of a foreground class (nnU-Net's oversampling); without one (the
published path) whole slices are resized. With `context_slices` k in the card, every sample carries the k
neighbours of its slice on either side as channels (preprocess.slice_stack, as predict feeds them). The
augmentation (swinseg.training.augment: the reference one, or nnU-Net's strong one) then applies, with a
numpy Generator per sample seeded from (seed, epoch, index): runs are reproducible whatever the number of
DataLoader workers or processes, and a resumed run sees the same samples.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from swinseg.config import Preprocessing
from swinseg.defaults import FOREGROUND_OVERSAMPLING, SEED
from swinseg.errors import SwinsegError
from swinseg.training.augment import StrongBounds
from swinseg.training.cases import (
    H5Volumes,
    MemoryVolumes,
    Progress,
    VolumeCase,
    check_fits_in_memory,
    check_grid_fits_in_memory,
    load_cases,
    set_bounds,
)
from swinseg.training.datasets import (
    TEST_FOLDER,
    TEST_SUFFIX,
    TRAIN_FOLDER,
    SynapseDataset,
    is_nnunet,
    is_synapse,
    open_nnunet,
    open_synapse,
    shorten,
    split_cases,
)
from swinseg.training.samples import GridSlices, LoadedCase, MemorySlices, NpzSlices, SliceDataset, to_grid_case

if TYPE_CHECKING:
    from swinseg.plan import Plan



# ------------------------------------------------------------------------------------------ training data


@dataclass
class TrainingCases:
    """A dataset folder read for training, before anything is decided from it (swinseg.plan decides): the
    split into training and validation cases and, for the nnU-Net layout, every case in memory laid out as
    predict lays it out, with dataset.json's channel name. The Synapse layout is streamed from disk later."""

    layout: str  # "synapse" | "nnunet"
    root: Path
    classes: tuple[str, ...] | None  # from dataset.json, None when the folder does not name them
    train_cases: list[str]
    validation_cases: list[str]
    channel_name: str | None = None
    loaded: dict[str, LoadedCase] = dataclasses.field(default_factory=dict)  # nnU-Net: the cases by name
    synapse: SynapseDataset | None = None

    @property
    def training(self) -> list[LoadedCase]:
        """The loaded training cases (nnU-Net layout; empty for Synapse)."""
        return [self.loaded[name] for name in self.train_cases] if self.loaded else []

    @property
    def training_slices(self) -> int:
        """Training slices: the listed npz slices (Synapse), or the slices of the loaded training cases."""
        if self.synapse is not None:
            return len(self.synapse.train_slices)
        return sum(case.image.shape[0] for case in self.training)


@dataclass
class TrainingData:
    """What training needs from a dataset folder of either layout, and the preprocessing it was built with."""

    layout: str  # "synapse" | "nnunet"
    root: Path
    slices: SliceDataset
    volumes: Sequence[VolumeCase]  # held-out volumes for validation (may be empty)
    classes: tuple[str, ...] | None  # from dataset.json, None when the folder does not name them
    train_cases: list[str]
    validation_cases: list[str]
    preprocessing: Preprocessing  # resolved: spacing, plane and intensities as decided by swinseg.plan
    notes: list[str] = dataclasses.field(default_factory=list)  # how they were decided, for the summary
    plan: Plan | None = None  # the plan that decided them (None: a resumed run takes its card's)


def read_training_cases(path: str | Path, preprocessing: Preprocessing, *, seed: int = SEED,
                        validation_fraction: float = 0.2, validation_cases: Sequence[str] | None = None,
                        lists: str | Path | None = None, progress: Progress | None = None) -> TrainingCases:
    """Open a dataset folder in the Synapse or nnU-Net layout and read what training will use, once.

    Synapse: the slices of train.txt, validation volumes of test_vol.txt (or `validation_cases` of
    test_vol_h5/). nnU-Net: every pair checked and loaded into memory in the orientation and plane of
    `preprocessing`, and a seeded split into training and validation cases (`validation_fraction`, or
    `validation_cases` by name).
    """
    root = Path(path)
    if not root.is_dir():
        raise SwinsegError(f"{root}: dataset folder not found")
    if is_synapse(root):
        return _read_synapse(root, validation_cases, lists)
    if is_nnunet(root):
        dataset = open_nnunet(root)
        train, validation = split_cases(dataset.names, test_fraction=validation_fraction,
                                        test_cases=validation_cases, seed=seed, held_out="val")
        check_fits_in_memory(dataset, train + validation)
        loaded = load_cases(dataset, train + validation, preprocessing, progress)
        return TrainingCases("nnunet", root, dataset.classes, train, validation,
                             read_channel_name(root / "dataset.json"), {case.name: case for case in loaded})
    raise SwinsegError(f"{root}: neither a Synapse folder ({TRAIN_FOLDER}/, {TEST_FOLDER}/) nor an nnU-Net "
                       f"dataset (imagesTr/, labelsTr/, dataset.json)")


def _read_synapse(root: Path, validation_cases: Sequence[str] | None, lists: str | Path | None) -> TrainingCases:
    synapse = open_synapse(root, lists)
    tests = synapse.test_cases
    if validation_cases is not None:
        tests = list(validation_cases)
        missing = [n for n in tests if not (synapse.test_dir / f"{n}{TEST_SUFFIX}").is_file()]
        if missing:
            raise SwinsegError(f"{synapse.test_dir}: validation cases not found: {shorten(missing)}")
    train_cases = sorted({n.split("_slice")[0] for n in synapse.train_slices})
    return TrainingCases("synapse", root, synapse.classes, train_cases, list(tests), synapse=synapse)


def open_training_data(source: str | Path | TrainingCases, *, img_size: int, preprocessing: Preprocessing,
                       augment: str | bool = "reference", seed: int = SEED, validation_fraction: float = 0.2,
                       validation_cases: Sequence[str] | None = None, lists: str | Path | None = None,
                       oversample_foreground: float = FOREGROUND_OVERSAMPLING, notes: Sequence[str] = (),
                       plan: Plan | None = None, progress: Progress | None = None,
                       strong_bounds: StrongBounds = StrongBounds()) -> TrainingData:
    """The training samples and validation volumes of a dataset, built with `preprocessing` as it is: its
    spacing, plane and intensities are decided already (swinseg.plan; a resumed run: its card's).

    `source`: cases read by `read_training_cases`, or a folder to read now (with `seed`, `validation_fraction`,
    `validation_cases`, `lists`). With a target spacing the training cases are resampled to it once, and
    samples are img_size crops (`oversample_foreground` of them centred on a foreground voxel); without one
    whole slices are resized (the published path; always so for the Synapse layout, whose files carry no
    spacing). `augment`: reference, strong or none (True/False: reference/none); `seed` also draws the crops
    and the augmentation. The preprocessing's `context_slices` decides the neighbours each sample carries.
    `notes` (how the preprocessing was decided) and `plan` are kept for the training summary.
    `strong_bounds`: the strong augmentation's mirror axes, largest rotation and per-class intensity shift.
    """
    if isinstance(augment, bool):
        augment = "reference" if augment else "none"
    cases = source if isinstance(source, TrainingCases) else read_training_cases(
        source, preprocessing, seed=seed, validation_fraction=validation_fraction,
        validation_cases=validation_cases, lists=lists, progress=progress)
    slices = SliceDataset(_slice_source(cases, preprocessing, oversample_foreground, seed), img_size,
                          augment=augment, seed=seed, strong_bounds=strong_bounds)
    volumes: Sequence[VolumeCase]
    if cases.synapse is not None:
        volumes = H5Volumes(cases.synapse.test_dir, cases.validation_cases)
    else:
        volumes = MemoryVolumes([cases.loaded[n] for n in cases.validation_cases])
    return TrainingData(cases.layout, cases.root, slices, volumes, cases.classes, cases.train_cases,
                        cases.validation_cases, preprocessing, list(notes), plan)


def _slice_source(cases: TrainingCases, prep: Preprocessing, oversample: float,
                  seed: int) -> NpzSlices | MemorySlices | GridSlices:
    """Where the training samples come from: npz slices (Synapse), whole slices in memory, or the cases
    resampled to the target spacing."""
    if cases.synapse is not None:
        if prep.resamples:
            raise SwinsegError(f"{cases.root}: Synapse-layout slices carry no pixel spacing; they train with "
                               "whole slices (spacing none)")
        return NpzSlices(cases.synapse.train_dir, cases.synapse.train_slices, prep.context_slices)
    set_bounds(list(cases.loaded.values()), prep)
    training = cases.training
    if not prep.resamples:
        return MemorySlices(training, prep.context_slices)
    check_grid_fits_in_memory(cases.root, training, prep.spacing)
    return GridSlices([to_grid_case(case, prep.spacing, seed) for case in training], oversample,
                      prep.context_slices)


def read_channel_name(path: Path) -> str | None:
    """Channel 0's name in an nnU-Net dataset.json (`channel_names`, or MSD's `modality`), None if absent."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names = values.get("channel_names") or values.get("modality") if isinstance(values, dict) else None
    if not isinstance(names, dict):
        return None
    name = names.get("0", names.get(0))
    return str(name) if name is not None else None
