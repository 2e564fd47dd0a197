"""The planner: the one place where the data decides how a model is trained (nnU-Net's plans, in one module).

`fingerprint` (swinseg.fingerprint) measures the training cases once they are read
(swinseg.training.data.read_training_cases): spacing and size per case, intensities of the foreground and of the
whole scan, class shares and object sizes. `make_plan` turns a fingerprint, the model card and the training
options into a `Plan`: every decision with its value, a one-line reason, and the flag that chose it when a user
did (the target in-plane spacing, the plane, the crop and the tiles it needs, the intensity scheme, foreground
oversampling, the batch size for the device, the mirror axes, the training budget). Training builds its data
from `Plan.preprocessing`, writes the plan to RUN_DIR/plan.json and the fingerprint into the model card;
`swinseg plan DATA` prints both without training.
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from swinseg.config import AUTO, ModelCard, Preprocessing, parse_spacing
from swinseg.defaults import FOREGROUND_OVERSAMPLING, MR_PERCENTILES, TILE_OVERLAP
from swinseg.errors import SwinsegError
from swinseg.fingerprint import Fingerprint, fingerprint
from swinseg.io import atomic_output
from swinseg.orientation import letter_axis, slice_axis
from swinseg.preprocess import grid_size, tile_starts
from swinseg.training.data import TrainingCases
from swinseg.training.samples import LoadedCase

if TYPE_CHECKING:
    import torch

# Bytes a training sample holds per img_size^2 x embed_dim: the tensors autograd saves for the backward of
# swin_unet_test/demo/tiny/tiny_full measure 43-52 (fp32, torch.autograd.graph.saved_tensors_hooks), doubled
# for the backward's own buffers and the allocator; mixed precision only lowers it.
SAMPLE_BYTES_PER_PIXEL_CHANNEL = 100
BATCH = 24  # the published recipe's batch, and the starting point on a GPU
# The scratch recipe's batch on a CPU, where a step costs about its batch: more, smaller steps in the same time.
# Batch 24 against 16 for the same samples on the real CT blocks (README, "Training recipe from scratch"):
# 0.04-0.08 lower held-out Dice and 0.03-0.07 lower on the training blocks, each seed, in more time.
CPU_BATCH = 16
GPU_MEMORY_SHARE = 0.8  # of the free memory, for the weights, their gradients, momentum and the batch
SIDE_WORDS = {"left", "right", "l", "r", "lt", "rt"}  # words of a class name that name a side
ONE_SIDED_ORGANS = ("liver", "spleen", "gallbladder", "stomach", "pancreas")


# ------------------------------------------------------------------------------------------------ plan


@dataclass(frozen=True)
class Decision:
    """One planned choice: its value (JSON-able), as shown, why, and the option that chose it (None: the
    planner's rule)."""

    value: Any
    text: str
    reason: str
    flag: str | None = None

    @property
    def overridden(self) -> bool:
        """True when a user option made this choice instead of the planner's rule."""
        return self.flag is not None

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "text": self.text, "reason": self.reason, "overridden": self.overridden,
                "flag": self.flag}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Decision:
        return cls(values["value"], values["text"], values["reason"], values.get("flag"))


DECISIONS = ("spacing", "plane", "patch_size", "intensities", "oversample_foreground", "batch_size", "mirror_axes",
             "iterations")


@dataclass(frozen=True)
class Plan:
    """The decisions for training one model on one dataset, the card section they make (`preprocessing`),
    and the fingerprint they were made from (None for the Synapse layout, whose files carry no spacing)."""

    layout: str
    spacing: Decision  # target in-plane spacing [sy, sx] mm, or None: whole slices resized
    plane: Decision
    patch_size: Decision  # the card's img_size: the crop (and the prediction tile)
    intensities: Decision  # {"modality", "window"} or {"modality", "percentiles"}
    oversample_foreground: Decision
    batch_size: Decision
    mirror_axes: Decision  # slice axes (0 rows, 1 columns) that mirroring may flip
    iterations: Decision
    preprocessing: Preprocessing
    fingerprint: Fingerprint | None = None

    def decisions(self) -> dict[str, Decision]:
        return {name: getattr(self, name) for name in DECISIONS}

    def lines(self) -> list[str]:
        """One human-readable line per decision: "decision: value — reason [flag]"."""
        return [f"{name.replace('_', ' ')}: {d.text} — {d.reason}" + (f" [{d.flag}]" if d.flag else "")
                for name, d in self.decisions().items()]

    def to_dict(self) -> dict[str, Any]:
        return {"layout": self.layout, **{name: d.to_dict() for name, d in self.decisions().items()},
                "preprocessing": self.preprocessing.to_dict(),
                "fingerprint": self.fingerprint.to_dict() if self.fingerprint else None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Plan:
        try:
            found = values.get("fingerprint")
            return cls(layout=str(values["layout"]),
                       **{name: Decision.from_dict(values[name]) for name in DECISIONS},
                       preprocessing=Preprocessing.from_dict(dict(values["preprocessing"])),
                       fingerprint=Fingerprint.from_dict(found) if found else None)
        except (KeyError, TypeError) as error:
            raise SwinsegError(f"not a swinseg plan ({error})") from error

    def apply_to_card(self, card: ModelCard) -> ModelCard:
        """The card trained with this plan: its preprocessing resolved, the fingerprint and the mirrored axes
        (what predict's TTA may flip) recorded."""
        return dataclasses.replace(card, preprocessing=self.preprocessing,
                                   fingerprint=self.fingerprint.to_dict() if self.fingerprint else None,
                                   mirror_axes=tuple(self.mirror_axes.value))

    def apply_to_config(self, config: Any) -> Any:
        """The training config (a dataclass) with the planned batch size."""
        if config.batch_size == self.batch_size.value:
            return config
        return dataclasses.replace(config, batch_size=self.batch_size.value)


def write_plan(path: Path, plan: Plan) -> None:
    """plan.json, written atomically."""
    import json

    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(plan.to_dict(), indent=1) + "\n", encoding="utf-8")


def make_plan(cases: Sequence[LoadedCase], channel_name: str | None, card: ModelCard, config_like: Any,
              device: str | torch.device = "cpu", *, classes: Sequence[str] | None = None,
              processes: int = 1) -> Plan:
    """The plan for training `card` on loaded nnU-Net cases (the training cases only). `config_like`: a
    swinseg.training.loop.TrainConfig or anything with its attributes; `processes`: the torchrun processes sharing
    the (global) batch. `classes`: the label names trained (default: the card's)."""
    names = tuple(classes or card.classes)
    return decide(fingerprint(cases, channel_name, config_like.seed, names), card, config_like, device,
                  classes=names, processes=processes)


def plan_training(cases: TrainingCases, card: ModelCard, config_like: Any, device: str | torch.device = "cpu",
                  processes: int = 1) -> Plan:
    """The plan for cases read by swinseg.training.data.read_training_cases, in either layout."""
    classes = tuple(config_like.classes or cases.classes or card.classes)
    if cases.layout == "synapse":
        return decide(None, card, config_like, device, classes=classes, slices=cases.training_slices,
                      processes=processes)
    return make_plan(cases.training, cases.channel_name, card, config_like, device, classes=classes,
                     processes=processes)


def decide(found: Fingerprint | None, card: ModelCard, config: Any, device: str | torch.device = "cpu", *,
           classes: Sequence[str], slices: int | None = None, processes: int = 1) -> Plan:
    """Every decision from a fingerprint (None: the Synapse layout, with `slices` training slices)."""
    prep = card.preprocessing
    plane = plane_decision(config, card, synapse=found is None)
    if found is None:
        spacing, intensities, count = synapse_spacing(config, card), synapse_intensities(prep), int(slices or 0)
    else:
        spacing = spacing_decision(spacing_choice(config, card), prep, found)
        intensities, count = intensity_decision(prep, found), sum(shape[0] for shape in found.shapes)
    resolved = dataclasses.replace(prep, plane=plane.value, spacing=_pair(spacing.value), **_scheme(intensities))
    batch = batch_decision(config, card, device, processes, count)
    mirror = mirror_decision(classes, resolved, config.mirror, config.augment)
    return Plan("synapse" if found is None else "nnunet", spacing, plane, patch_decision(card, resolved, found),
                intensities, oversampling_decision(config, resolved), batch, mirror,
                iterations_decision(config, batch.value, count, processes), resolved, found)


def layout_preprocessing(config: Any, card: ModelCard, synapse: bool) -> Preprocessing:
    """The card's preprocessing in the planned plane: what the cases are read with, before the rest is planned."""
    return dataclasses.replace(card.preprocessing, plane=plane_decision(config, card, synapse).value)


# ------------------------------------------------------------------------------------------- decisions


def plane_decision(config: Any, card: ModelCard, synapse: bool = False) -> Decision:
    """--plane, else the card's (axial for the shipped cards: Swin-Unet's published slices)."""
    if config.plane is None:
        plane = card.preprocessing.plane
        return Decision(plane, plane, "the card's")
    plane = config.plane.lower()
    if synapse and plane != "axial":
        raise SwinsegError(f"{config.data}: the Synapse layout holds axial slices; --plane {config.plane} "
                           "needs volumes (an nnU-Net folder)")
    return Decision(plane, plane, "given", "--plane")


def spacing_choice(config: Any, card: ModelCard) -> str | tuple[float, float]:
    """What --spacing means for this run: as given ("auto", "none" or (sy, sx) mm); else "card" when the card
    names a spacing (always for finetune: the model was trained at that scale), else "auto"."""
    if config.spacing is not None:
        text = config.spacing.strip().lower().strip("[]() ")
        return text if text in ("auto", "none") else parse_spacing(text, "--spacing (auto, none or SY,SX mm)")
    if getattr(config, "checkpoint", None) or card.preprocessing.spacing is not None:
        return "card"
    return "auto"


def spacing_decision(choice: str | tuple[float, float], prep: Preprocessing, found: Fingerprint) -> Decision:
    """The target in-plane spacing: "auto" = the median of the training cases (nnU-Net's rule), "none" =
    whole slices resized, "card" = the card's, or (sy, sx) mm as given."""
    flag = None if choice in ("auto", "card") else "--spacing"
    if choice == "none":
        return Decision(None, "none", "whole slices resized to the network size", flag)
    if choice == "card":
        if prep.spacing is None:
            return Decision(None, "none", "the card's: whole slices resized to the network size")
        return Decision(list(prep.spacing), _mm(prep.spacing), "the card's")
    if choice == "auto":
        spacings = np.asarray([s[1:] for s in found.spacings], dtype=np.float64)
        target = [float(round(v, 4)) for v in np.median(spacings, axis=0)]
        low, high = spacings.min(axis=0), spacings.max(axis=0)
        return Decision(target, _mm(target), f"the median in-plane spacing of {found.num_cases} training case(s) "
                        f"(rows {low[0]:g}-{high[0]:g}, columns {low[1]:g}-{high[1]:g} mm)")
    target = parse_spacing(choice)
    return Decision(list(target), _mm(target), "given", flag)


def synapse_spacing(config: Any, card: ModelCard) -> Decision:
    """The Synapse layout trains with whole slices: its files carry no spacing to resample from."""
    choice = spacing_choice(config, card)
    wanted = card.preprocessing.spacing if choice == "card" else None if choice in ("auto", "none") else choice
    if wanted is not None:
        raise SwinsegError(f"{config.data}: Synapse-layout slices carry no pixel spacing, so they cannot be "
                           f"resampled to {wanted[0]:g}x{wanted[1]:g} mm; train on the nnU-Net dataset, or use "
                           "--spacing none")
    return Decision(None, "none", "Synapse-layout files carry no spacing: whole slices resized, the published path",
                    "--spacing" if choice == "none" else None)


def intensity_decision(prep: Preprocessing, found: Fingerprint) -> Decision:
    """dataset.json's channel name decides: CT = the card's window, or with `window: auto` the 0.5/99.5
    percentiles of the training foreground (nnU-Net's CT scheme); any other name (MR, T1, T2, FLAIR, ...) =
    per-volume percentiles. Without a channel name the card's modality stands."""
    channel = found.channel_name
    said = f"dataset.json names channel 0 {channel!r}" if channel else "no channel name in dataset.json"
    is_ct = prep.modality == "CT" if channel is None else channel.strip().upper() == "CT"
    if not is_ct:
        percentiles = prep.percentiles if prep.modality == "MR" else MR_PERCENTILES
        value = {"modality": "MR", "percentiles": list(percentiles)}
        reason = said if prep.modality == "MR" else f"instead of the card's CT window ({said})"
        return Decision(value, f"per-volume percentiles {_range(percentiles)}", reason)
    if prep.modality == "CT" and prep.window != AUTO:
        return Decision({"modality": "CT", "window": list(prep.window)}, f"CT window {_range(prep.window)} HU",
                        f"the card's; {said}")
    if found.foreground is None:
        raise SwinsegError("window auto: the training cases have no foreground voxels to take percentiles from")
    low, high = round(found.foreground["p0.5"], 2), round(found.foreground["p99.5"], 2)
    window = (low, high if high > low else low + 1.0)
    because = "the card's window is auto" if prep.modality == "CT" else "the card is for MR"
    return Decision({"modality": "CT", "window": list(window)}, f"CT window {_range(window)} HU",
                    f"the 0.5/99.5 percentiles of the training foreground ({because}; {said})")


def synapse_intensities(prep: Preprocessing) -> Decision:
    """Synapse slices are stored normalised; predict applies the card's scheme to raw scans."""
    if prep.modality == "CT" and prep.window == AUTO:
        raise SwinsegError("the card's CT window is 'auto', but Synapse-layout images are normalised already, so "
                           "there is nothing to resolve it from; give the card a window [low, high]")
    if prep.modality == "CT":
        return Decision({"modality": "CT", "window": list(prep.window)}, f"CT window {_range(prep.window)} HU",
                        "the card's; Synapse files hold intensities normalised to [0, 1] already")
    return Decision({"modality": "MR", "percentiles": list(prep.percentiles)},
                    f"per-volume percentiles {_range(prep.percentiles)}",
                    "the card's; Synapse files hold intensities normalised to [0, 1] already")


def patch_decision(card: ModelCard, prep: Preprocessing, found: Fingerprint | None) -> Decision:
    """The card's img_size is the training crop and the prediction tile; how many tiles a median slice needs."""
    size = card.network.img_size
    if found is None:
        return Decision(size, f"{size}x{size} px", "whole slices resized to the card's img_size")
    rows, cols = (int(round(n)) for n in found.median_shape[1:])
    if prep.spacing is None:
        return Decision(size, f"{size}x{size} px",
                        f"the card's img_size; median slices of {rows}x{cols} px are resized to it whole")
    grid = grid_size((rows, cols), tuple(found.median_spacing[1:]), prep.spacing)  # type: ignore[arg-type]
    tiles = len(tile_starts(grid[0], size)) * len(tile_starts(grid[1], size))
    return Decision(size, f"{size}x{size} px crops",
                    f"the card's img_size; a median slice ({rows}x{cols} px) is {grid[0]}x{grid[1]} px at "
                    f"{_mm(prep.spacing)}: {tiles} tile(s) at overlap {TILE_OVERLAP:g} in predict")


def oversampling_decision(config: Any, prep: Preprocessing) -> Decision:
    """nnU-Net's 1/3 of the crops centred on a foreground voxel; none without crops (whole slices)."""
    if prep.spacing is None:
        return Decision(0.0, "none", "whole slices: no crops to centre")
    share = float(config.oversample_foreground)
    flag = None if math.isclose(share, FOREGROUND_OVERSAMPLING) else "--oversample-foreground"
    reason = "given" if flag else "nnU-Net's share of crops centred on a voxel of a random foreground class"
    return Decision(share, f"{share:.0%} of the crops", reason, flag)


def batch_decision(config: Any, card: ModelCard, device: str | torch.device, processes: int = 1,
                   slices: int = 0) -> Decision:
    """--batch-size when given; else CPU_BATCH for the scratch recipe on a CPU and BATCH otherwise, at most the
    `slices` to train on and a multiple of the processes; on CUDA reduced to what fits in the free memory of
    each GPU (see batch_rule)."""
    kind = str(device).split(":")[0]
    given = config.batch_size is not None
    if given:
        batch, reason = int(config.batch_size), "given"
    elif kind != "cuda" and config.recipe == "scratch":
        batch, reason = CPU_BATCH, (f"the scratch recipe on a {kind}: a step costs about its batch, and "
                                    f"{CPU_BATCH} learned more than {BATCH} in the same time")
    else:
        batch, reason = BATCH, f"the {config.recipe} recipe's"
    if not given and 0 < slices < batch:
        batch, reason = slices, f"{reason}; cut to the {slices} training slices"
    if not given and batch % processes:
        batch = max(processes, batch // processes * processes)
    flag = "--batch-size" if given else None
    if kind != "cuda":
        return Decision(batch, str(batch), f"{reason} ({kind}: memory does not limit it)", flag)
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return batch_rule(batch, card, free, processes, flag)


def batch_rule(batch: int, card: ModelCard, free_bytes: int, processes: int = 1,
               flag: str | None = None) -> Decision:
    """`batch` (global, over `processes` GPUs with `free_bytes` each) when it fits, else the largest multiple
    of `processes` that does: a sample takes about SAMPLE_BYTES_PER_PIXEL_CHANNEL x img_size^2 x embed_dim
    bytes, the model 4 copies of its weights (weights, gradients, momentum, a spare)."""
    network = card.network
    sample = SAMPLE_BYTES_PER_PIXEL_CHANNEL * network.img_size ** 2 * network.embed_dim
    usable = GPU_MEMORY_SHARE * free_bytes - 16 * _parameters(card)
    per_gpu = max(int(usable // sample), 0)
    fits = per_gpu * processes
    estimate = (f"about {sample / 2**20:.0f} MiB a sample at {network.img_size} px, embed {network.embed_dim}; "
                f"{per_gpu} fit in {free_bytes / 2**30:.1f} GiB free")
    if batch <= fits:
        return Decision(batch, str(batch), f"as configured: {estimate}", flag)
    reduced = max(fits, processes)  # the rule overrides the configured batch, which would not fit
    return Decision(reduced, str(reduced), f"reduced from the configured {batch}: {estimate}")


def _parameters(card: ModelCard) -> int:
    """Parameters of the card's network, counted on the meta device (no memory)."""
    import torch

    from swinseg.model import SwinUnet

    with torch.device("meta"):
        return sum(p.numel() for p in SwinUnet(card.network).parameters())


MIRROR_AXES = {"both": [0, 1], "rows": [0], "columns": [1], "none": []}  # --mirror: the slice axes flipped


def mirror_decision(classes: Sequence[str], prep: Preprocessing, given: str | None = None,
                    augment: str | None = "strong") -> Decision:
    """Slice axes that training flips (and predict's TTA may flip). The strong augmentation: `given` (--mirror
    both|rows|columns|none), else both (nnU-Net's default) unless a class names a side (left, right, _l, _r, ...)
    or is a one-sided organ (liver, spleen, ...): then not the left-right one, where a flip would show the anatomy
    on the wrong side. The reference augmentation flips both; none flips neither."""
    if augment == "reference":
        return Decision([0, 1], "rows, columns", "the reference augmentation flips slices along either axis")
    if augment == "none":
        return Decision([], "none", "no augmentation")
    if given is not None and given != "auto":
        return Decision(MIRROR_AXES[given], given, "given", "--mirror")
    lateral = [name for name in classes[1:] if _names_a_side(name)]
    one_sided = [name for name in classes[1:] if any(organ in name.lower() for organ in ONE_SIDED_ORGANS)]
    axes = [0, 1]
    left_right = _left_right_axis(prep)
    if left_right is None or not (lateral or one_sided):
        reason = ("no class names a side or a one-sided organ" if left_right is not None else
                  f"{prep.plane} slices have no left-right axis")
        return Decision(axes, "rows, columns", f"both in-plane axes (nnU-Net's): {reason}")
    axes.remove(left_right)
    why = (f"{', '.join(lateral)} name a side" if lateral else
           f"{', '.join(one_sided)} lie on one side of the body")
    return Decision(axes, f"{['rows', 'columns'][axes[0]]} only",
                    f"no left-right mirroring: {why} (a flip would show them on the other side)")


def _names_a_side(name: str) -> bool:
    lowered = name.lower()
    return "left" in lowered or "right" in lowered or bool(SIDE_WORDS & set(re.split(r"[^a-z0-9]+", lowered)))


def _left_right_axis(prep: Preprocessing) -> int | None:
    """The slice axis (0 rows, 1 columns) running left-right in the card's orientation and plane, if any."""
    array_axis = letter_axis(prep.orientation, "LR")
    sliced = slice_axis(prep.orientation, prep.plane)
    if array_axis == sliced:
        return None
    return [a for a in range(3) if a != sliced].index(array_axis)


def iterations_decision(config: Any, batch: int, slices: int, processes: int = 1) -> Decision:
    """The training budget: epochs x the batches of an epoch (the loader's count: the slices split over the
    processes, then into their share of the batch); --iterations rounded up to whole epochs when given."""
    source = f"the {config.recipe} recipe"
    per_epoch = math.ceil(math.ceil(slices / processes) / max(batch // processes, 1))
    if config.iterations is not None:
        epochs = max(1, math.ceil(config.iterations / per_epoch))
        return Decision(epochs * per_epoch, str(epochs * per_epoch),
                        f"{config.iterations} given, rounded up to {_count(epochs, 'epoch')} of "
                        f"{_count(per_epoch, 'batch')}", "--iterations")
    total = int(config.epochs) * per_epoch
    return Decision(total, str(total), f"{_count(config.epochs, 'epoch')} x {_count(per_epoch, 'batch')} of "
                    f"{batch} from {_count(slices, 'training slice')} ({source})")


# ------------------------------------------------------------------------------------------------- helpers


def _scheme(intensities: Decision) -> dict[str, Any]:
    """Preprocessing fields of an intensity decision."""
    value = intensities.value
    if value["modality"] == "CT":
        return {"modality": "CT", "window": tuple(value["window"]), "percentiles": None}
    return {"modality": "MR", "window": None, "percentiles": tuple(value["percentiles"])}


def _pair(value: Any) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _mm(spacing: Sequence[float]) -> str:
    return f"{spacing[0]:g}x{spacing[1]:g} mm"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "es" if noun == "batch" else "s")


def _range(values: Any) -> str:
    return f"[{values[0]:g}, {values[1]:g}]"
