"""Batched slice inference: scans in, label maps out, in each scan's own geometry.

A volume goes through swinseg.preprocess (oriented to the card, sliced along its plane, intensities mapped to
[0, 1] batch by batch), then, on the device, one of the card's two in-plane paths:

- tiled (the card has a target `spacing`): each slice resampled to that spacing, padded with the background
  (0 after normalisation: air for CT, the volume minimum for MR) where smaller than a tile, covered by img_size
  tiles overlapping by `tile_overlap` (0.5), tiles of several slices batched together, network outputs
  accumulated with Gaussian importance weights, resampled back to the slice (bilinear) and argmax there;
- whole-slice (spacing null, the published layout): each slice resized to img_size (scipy-exact cubic, as in
  training), logits resized back (bilinear) and argmax there.

TTA averages the softmax over flips of each network input. Labels are streamed into a preallocated uint8
array: beyond the scan and its label map, memory is bounded by one batch of slices. The result is mapped back
to the scan's array order and written with the scan's geometry.

`protocol="reference"` is the published evaluation path instead: one slice per pass, cubic resize in, softmax
+ argmax at the model size, nearest resize of the labels back (scipy.ndimage.zoom order 0), float32.

`predict_cases` runs many cases with one model: it skips finished outputs, isolates failures, and reads the
next case (and writes the previous one) in background threads while the network runs.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from swinseg import io, postprocess
from swinseg.config import ModelCard, load_card
from swinseg.device import autocast, resolve_device, resolve_precision
from swinseg.errors import SwinsegError
from swinseg.preprocess import (DEFAULT_TILE_OVERLAP, PreparedVolume, gaussian_importance, grid_size, pad_margins,
                                prepare_volume, resample_images, resize_slices, scale_intensities, tile_corners)

PROTOCOLS = ("fast", "reference")
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # none, left-right, up-down, both
SliceProgress = Callable[[int], None]


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """uint8 labels, uint16 beyond 256 classes."""
    return np.uint8 if num_classes <= 256 else np.uint16


class Predictor:
    """A model kept on its device, predicting label maps slice by slice in batches.

    `precision`: auto (bf16/fp16 autocast on CUDA, fp32 on CPU), bf16, fp16 or fp32. `tta`: average the
    softmax over horizontal/vertical flips (4 passes). `batch_size`: network inputs (tiles, or whole slices)
    per forward pass. `tile_overlap`: share of a tile its neighbours overlap (cards with a target spacing).
    `protocol`: "fast" or "reference" (see the module doc; reference forces batch size 1, float32 and no TTA).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        card: ModelCard,
        *,
        device: str | torch.device = "auto",
        batch_size: int = 16,
        precision: str = "auto",
        tta: bool = False,
        protocol: str = "fast",
        tile_overlap: float = DEFAULT_TILE_OVERLAP,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise SwinsegError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if batch_size < 1:
            raise SwinsegError(f"--batch-size {batch_size}: must be at least 1")
        if protocol == "reference" and tta:
            raise SwinsegError("--tta is not part of --protocol reference (the published path has no TTA)")
        if protocol == "reference" and card.preprocessing.resamples:
            raise SwinsegError(
                f"--protocol reference is the published whole-slice resize, but model {card.name!r} was trained "
                f"on slices resampled to {_mm(card.preprocessing.spacing)} mm; drop --protocol reference"
            )
        if not 0.0 <= tile_overlap < 1.0:
            raise SwinsegError(f"--tile-overlap {tile_overlap}: must be in [0, 1)")
        num_classes = model.config.num_classes
        if num_classes != len(card.classes):
            where = f" ({card.source})" if card.source else ""
            raise SwinsegError(
                f"model card {card.name!r}{where} names {len(card.classes)} classes but the network predicts "
                f"{num_classes}"
            )
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = None if protocol == "reference" else resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.card = card
        self.batch_size = 1 if protocol == "reference" else batch_size
        self.tta = tta
        self.protocol = protocol
        self.tile_overlap = float(tile_overlap)
        self.img_size = model.config.img_size
        self.num_classes = num_classes
        self._label_dtype = torch.uint8 if label_dtype(num_classes) == np.uint8 else torch.int32

    @property
    def target_spacing(self) -> tuple[float, float] | None:
        """The card's in-plane target spacing (mm), None for the whole-slice resize."""
        return self.card.preprocessing.spacing

    # ------------------------------------------------------------------------------------------ slices

    def predict_slices(
        self, slices: np.ndarray, progress: SliceProgress | None = None, *,
        spacing: tuple[float, float] | None = None,
    ) -> np.ndarray:
        """Labels (D, H, W) (uint8, uint16 beyond 256 classes) for normalised slices (D, H, W) float32 whose
        pixels are `spacing` (rows, columns) mm apart (needed by cards with a target spacing)."""
        return self._run(slices, None, spacing, None, progress)

    def predict_slices_with_probabilities(
        self, slices: np.ndarray, progress: SliceProgress | None = None, *,
        spacing: tuple[float, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels (D, H, W) and softmax probabilities (C, D, H, W) float16 (fast protocol only)."""
        return self._run_with_probabilities(slices, None, spacing, progress)

    def _run_with_probabilities(
        self, slices: np.ndarray, bounds: tuple[float, float] | None, spacing: tuple[float, float] | None,
        progress: SliceProgress | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.protocol == "reference":
            raise SwinsegError("--save-probabilities is not available with --protocol reference (labels only)")
        probabilities = np.empty((self.num_classes, *slices.shape), dtype=np.float16)
        return self._run(slices, bounds, spacing, probabilities, progress), probabilities

    def slices_per_batch(self, size: tuple[int, int], spacing: tuple[float, float] | None) -> int:
        """Slices handled together: enough that their tiles fill a forward pass (1 slice = 1 input untiled)."""
        if self.target_spacing is None or self.protocol == "reference":
            return self.batch_size
        return max(1, self.batch_size // self.tiles_per_slice(size, spacing))

    def tiles_per_slice(self, size: tuple[int, int], spacing: tuple[float, float] | None) -> int:
        """Network inputs per slice of `size` at `spacing` (1 for the whole-slice resize)."""
        if self.target_spacing is None:
            return 1
        height, width = self._padded(self._grid(size, spacing))
        return len(tile_corners(height, width, self.img_size, self.tile_overlap))

    def _grid(self, size: tuple[int, int], spacing: tuple[float, float] | None) -> tuple[int, int]:
        assert self.target_spacing is not None
        if spacing is None:
            raise SwinsegError(
                f"model {self.card.name!r} resamples slices to {_mm(self.target_spacing)} mm, but this input "
                "carries no physical pixel spacing (a PNG/JPEG/TIFF image, or a Synapse h5 file without a spacing "
                "attribute); give it as NIfTI/NRRD with its spacing"
            )
        return grid_size(size, spacing, self.target_spacing)

    def _padded(self, size: tuple[int, int]) -> tuple[int, int]:
        return max(size[0], self.img_size), max(size[1], self.img_size)

    @torch.inference_mode()
    def _run(
        self,
        slices: np.ndarray,
        bounds: tuple[float, float] | None,
        spacing: tuple[float, float] | None,
        probabilities: np.ndarray | None,
        progress: SliceProgress | None,
    ) -> np.ndarray:
        """Labels for `slices`, batch by batch; `bounds`: scale each batch from that range to [0, 1] first
        (None: the slices are normalised already)."""
        if slices.ndim != 3:
            raise ValueError(f"expected slices (D, H, W), got shape {slices.shape}")
        depth, height, width = slices.shape
        labels = np.empty((depth, height, width), dtype=label_dtype(self.num_classes))
        step = self.slices_per_batch((height, width), spacing)
        for start in range(0, depth, step):
            stop = min(start + step, depth)
            chunk = slices[start:stop] if bounds is None else scale_intensities(slices[start:stop], *bounds)
            batch = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).to(self.device)
            try:
                if self.protocol == "reference":
                    labels[start:stop] = self._reference_labels(batch).cpu().numpy()
                else:
                    if self.target_spacing is None:
                        scores = self._whole_slice_scores(batch)
                    else:
                        scores = self._tiled_scores(batch, self._grid((height, width), spacing))
                    if probabilities is not None:
                        probs = scores if self.tta else torch.softmax(scores, dim=1)
                        probabilities[:, start:stop] = probs.transpose(0, 1).to(torch.float16).cpu().numpy()
                    labels[start:stop] = scores.argmax(dim=1).to(self._label_dtype).cpu().numpy()
            except torch.cuda.OutOfMemoryError:
                raise SwinsegError(
                    f"out of GPU memory on {self.device} at --batch-size {self.batch_size}; use a smaller one"
                ) from None
            if progress is not None:
                progress(stop - start)
        return labels

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.dtype):
            return self.model(images).float()

    def _network_scores(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) float32 for network inputs (N, 1, S, S): logits, or flip-averaged softmax with TTA."""
        if not self.tta:
            return self._forward(images)
        total = None
        for dims in TTA_FLIPS:
            probs = torch.softmax(self._forward(images.flip(dims) if dims else images), dim=1)
            probs = probs.flip(dims) if dims else probs
            total = probs if total is None else total + probs
        return total / len(TTA_FLIPS)

    def _whole_slice_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) scores at the slice size for slices (B, H, W): the whole slice resized to img_size."""
        size = tuple(batch.shape[-2:])
        scores = self._network_scores(resize_slices(batch, self.img_size, order=3).unsqueeze(1))
        # Channels-last makes the class axis contiguous: the resize and the argmax over classes run ~4x faster.
        scores = scores.contiguous(memory_format=torch.channels_last)
        if tuple(scores.shape[-2:]) == size:
            return scores
        # Linear resize back, as scipy's order-1 zoom (align_corners) but as torch's sparse kernel: no matmuls.
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=True)

    def _tiled_scores(self, batch: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, C, H, W) scores at the slice size for slices (B, H, W): resampled to the target spacing (`grid`
        pixels), padded to at least one tile, tiled, weighted accumulation, resampled back."""
        size, tile = tuple(batch.shape[-2:]), self.img_size
        images = resample_images(batch.unsqueeze(1), grid)
        (top, bottom), (left, right) = pad_margins(grid[0], tile), pad_margins(grid[1], tile)
        if top or bottom or left or right:
            images = F.pad(images, (left, right, top, bottom), value=0.0)  # 0 = air (CT) / minimum (MR)
        height, width = images.shape[-2:]
        corners = tile_corners(height, width, tile, self.tile_overlap)
        weight = torch.tensor(gaussian_importance(tile), device=self.device)
        total = torch.zeros((images.shape[0], self.num_classes, height, width), device=self.device)
        coverage = torch.zeros((height, width), device=self.device)
        for y, x in corners:
            coverage[y:y + tile, x:x + tile] += weight
        inputs = [(b, y, x) for b in range(images.shape[0]) for y, x in corners]
        for first in range(0, len(inputs), self.batch_size):
            part = inputs[first:first + self.batch_size]
            tiles = torch.stack([images[b, :, y:y + tile, x:x + tile] for b, y, x in part])
            scores = self._network_scores(tiles) * weight
            for (b, y, x), score in zip(part, scores):
                total[b, :, y:y + tile, x:x + tile] += score
        total /= coverage
        total = total[:, :, top:height - bottom, left:width - right]
        return resample_images(total.contiguous(memory_format=torch.channels_last), size)

    def _reference_labels(self, batch: torch.Tensor) -> torch.Tensor:
        """The published evaluation path for one slice: cubic in, softmax + argmax, nearest back."""
        height, width = batch.shape[-2:]
        logits = self.model(resize_slices(batch, self.img_size, order=3).unsqueeze(1))
        labels = torch.softmax(logits, dim=1).argmax(dim=1)
        return resize_slices(labels, (height, width), order=0)

    # ----------------------------------------------------------------------------------------- volumes

    def prepare(self, volume: io.Volume, plane: str | None = None) -> PreparedVolume:
        """The volume laid out for this model by swinseg.preprocess (`plane`: default the card's)."""
        return prepare_volume(volume, self.card.preprocessing, plane)

    def predict_prepared(
        self, prepared: PreparedVolume, *, probabilities: bool = False, progress: SliceProgress | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (and probabilities (C, D, H, W) float16 if asked) in the prepared layout."""
        if probabilities:
            return self._run_with_probabilities(prepared.slices, prepared.bounds, prepared.spacing, progress)
        return self._run(prepared.slices, prepared.bounds, prepared.spacing, None, progress), None

    def predict_volume(
        self,
        volume: io.Volume,
        *,
        plane: str | None = None,
        classes: Sequence[int] | None = None,
        keep_largest: bool = False,
        progress: SliceProgress | None = None,
    ) -> np.ndarray:
        """Labels in the volume's own array order (write them with `io.write_volume(path, labels, volume)`)."""
        prepared = self.prepare(volume, plane)
        labels, _ = self.predict_prepared(prepared, progress=progress)
        return np.ascontiguousarray(prepared.restore(self.postprocess(labels, classes, keep_largest)))

    def predict_volume_with_probabilities(
        self,
        volume: io.Volume,
        *,
        plane: str | None = None,
        classes: Sequence[int] | None = None,
        keep_largest: bool = False,
        progress: SliceProgress | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and softmax probabilities (C, ...) float16, both in the volume's own array order.
        Post-processing (classes, keep_largest) applies to the labels only."""
        prepared = self.prepare(volume, plane)
        labels, probabilities = self.predict_prepared(prepared, probabilities=True, progress=progress)
        assert probabilities is not None
        labels = self.postprocess(labels, classes, keep_largest)
        return np.ascontiguousarray(prepared.restore(labels)), np.ascontiguousarray(prepared.restore(probabilities))

    @staticmethod
    def postprocess(labels: np.ndarray, classes: Sequence[int] | None, keep_largest: bool) -> np.ndarray:
        """Class subset, then the largest connected component per class (in place)."""
        if classes is not None:
            postprocess.keep_classes(labels, classes)
        if keep_largest:
            postprocess.keep_largest_component(labels)
        return labels


def _mm(spacing: tuple[float, ...] | None) -> str:
    return "x".join(f"{s:g}" for s in spacing or ())


# ------------------------------------------------------------------------------------------- model source


def load_predictor_model(
    *, model: str | None = None, weights: str | Path | None = None, checkpoint: str | Path | None = None
) -> tuple[torch.nn.Module, ModelCard]:
    """The network and card from `--model CARD [--weights FILE]` or `--checkpoint FILE [--model CARD]`.

    A card without --weights uses the weight file it names (`weights:` in its YAML).
    """
    from swinseg.weights import load_checkpoint

    if weights is not None and checkpoint is not None:
        raise SwinsegError("give either --weights (with --model) or --checkpoint, not both")
    if weights is not None and model is None:
        raise SwinsegError("--weights needs --model CARD (or pass a swinseg checkpoint with --checkpoint)")
    if model is None and checkpoint is None:
        raise SwinsegError("no model: give --checkpoint FILE, or --model CARD with --weights FILE")
    card = load_card(model) if model is not None else None
    path = checkpoint if checkpoint is not None else weights
    if path is None:
        assert card is not None
        if card.weights is None:
            raise SwinsegError(f"--model {model}: the card names no weight file; give --weights FILE")
        path = card.weights
    return load_checkpoint(Path(path), card)


# ----------------------------------------------------------------------------------------- cases and runs


@dataclass(frozen=True)
class Case:
    """One input scan and where its mask (and optionally its probabilities) go."""

    input: Path
    output: Path
    probabilities: Path | None = None

    def outputs(self) -> list[Path]:
        return [self.output] + ([self.probabilities] if self.probabilities else [])


@dataclass
class CaseResult:
    """What happened to a case: status "done", "skipped" or "failed" (with `message`)."""

    case: Case
    status: str
    message: str = ""
    shape: tuple[int, ...] = ()  # array order
    spacing: tuple[float, ...] = ()  # array order, mm
    seconds: float = 0.0
    voxels: dict[str, int] = field(default_factory=dict)  # foreground class name -> voxel count

    @classmethod
    def skipped(cls, case: Case) -> CaseResult:
        return cls(case, "skipped", "output exists (use --overwrite to replace it)")

    def volumes_ml(self) -> dict[str, float]:
        voxel_ml = float(np.prod(self.spacing)) / 1000.0 if self.spacing else 0.0
        return {name: round(count * voxel_ml, 3) for name, count in self.voxels.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; shape and spacing in (x, y, z) order as viewers show them."""
        result: dict[str, Any] = {
            "input": str(self.case.input),
            "output": str(self.case.output),
            "status": self.status,
        }
        if self.case.probabilities:
            result["probabilities"] = str(self.case.probabilities)
        if self.message:
            result["message"] = self.message
        if self.status == "done":
            result.update(
                shape=list(self.shape[::-1]),
                spacing=[round(s, 6) for s in self.spacing[::-1]],
                seconds=round(self.seconds, 3),
                voxels=self.voxels,
                volume_ml=self.volumes_ml(),
            )
        return result


@dataclass(frozen=True)
class RunOptions:
    """Per-case settings of a prediction run."""

    plane: str | None = None
    classes: Sequence[int] | None = None
    keep_largest: bool = False
    series: str | None = None
    channel: int | None = None
    overwrite: bool = False


def _output_name(source: Path) -> str:
    """Case name (nnU-Net `_0000` stripped) + .nii.gz, or .png for 2-D image inputs."""
    suffix = ".png" if source.name.lower().endswith(io.IMAGE_2D_SUFFIXES) else ".nii.gz"
    return io.case_name(source, strip_channel=True) + suffix


def probabilities_path(output: Path) -> Path:
    """`mask.nii.gz` -> `mask_probabilities.nii.gz` (NIfTI when the mask is a 2-D image format)."""
    name = output.name
    lower = name.lower()
    suffix = next((s for s in io.SUPPORTED_SUFFIXES if lower.endswith(s)), "")
    stem = name[: len(name) - len(suffix)] if suffix else name
    if suffix in io.IMAGE_2D_SUFFIXES or not suffix:
        suffix = ".nii.gz"
    return output.with_name(f"{stem}_probabilities{suffix}")


def plan_cases(inputs: Sequence[str | Path], output: str | Path, *, probabilities: bool = False) -> list[Case]:
    """Cases for input files, DICOM series folders and folders of scans.

    One input scan: `output` is the mask file, or a folder (existing, or written with a trailing slash).
    Several scans or a folder of scans: `output` is a folder, outputs are named after the cases. Raises for
    an output that would overwrite an input, an output folder that is an input folder (outputs would be read
    as inputs on the next run), and two cases writing the same file.
    """
    if not inputs:
        raise SwinsegError("no input given")
    output_text = str(output)
    output = Path(output)
    sources: list[Path] = []
    folder_mode = len(inputs) > 1
    for item in map(Path, inputs):
        if item.is_dir():
            found = io.find_images(item)
            if not found:
                raise SwinsegError(f"{item}: folder holds no scans ({', '.join(io.SUPPORTED_SUFFIXES)}) or DICOM series")
            folder_mode = folder_mode or found != [item]
            if found != [item] and output.resolve() == item.resolve():
                raise SwinsegError(f"-o {output}: the output folder is an input folder; choose another")
            sources.extend(found)
        else:
            sources.append(item)
    has_image_suffix = output_text.lower().endswith(io.SUPPORTED_SUFFIXES)
    to_folder = folder_mode or output.is_dir() or output_text.endswith(("/", os.sep)) or not has_image_suffix
    if to_folder and output.exists() and not output.is_dir():
        raise SwinsegError(f"-o {output}: is a file, but {len(sources)} case(s) need an output folder")
    if to_folder and has_image_suffix and not output.is_dir():
        raise SwinsegError(f"-o {output}: give a folder when predicting {len(sources)} cases")
    if not to_folder and output_text.lower().endswith((".jpg", ".jpeg")):
        raise SwinsegError(f"-o {output}: JPEG is lossy and cannot hold labels; use .png")
    cases: list[Case] = []
    seen: dict[Path, Path] = {}
    for source in sources:
        target = output / _output_name(source) if to_folder else output
        if target.resolve() in seen:
            raise SwinsegError(f"{seen[target.resolve()]} and {source} would both write {target}; rename one")
        seen[target.resolve()] = source
        if target.resolve() == source.resolve():
            raise SwinsegError(f"{source}: the output would overwrite this input; choose another -o")
        cases.append(Case(source, target, probabilities_path(target) if probabilities else None))
    return cases


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' (0 <= i < n) -> (i, n)."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise SwinsegError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise SwinsegError(f"--shard {text}: need n >= 1 and 0 <= i < n (shards are numbered from 0)")
    return index, count


def shard_cases(cases: Sequence[Case], index: int, count: int) -> list[Case]:
    """Every `count`-th case starting at `index` (stable over reruns: skipping happens after sharding)."""
    return list(cases[index::count])


def is_finished(case: Case) -> bool:
    return all(path.exists() for path in case.outputs())


@dataclass
class _Loaded:
    volume: io.Volume
    prepared: PreparedVolume
    seconds: float


def predict_cases(
    predictor: Predictor,
    cases: Sequence[Case],
    options: RunOptions = RunOptions(),
    *,
    on_start: Callable[[Case, int], None] | None = None,
    on_slices: SliceProgress | None = None,
) -> Iterator[CaseResult]:
    """Predict each case, yielding its result (done, skipped or failed) as soon as it is known.

    Finished cases (all outputs present) are skipped unless `options.overwrite`. A failing case yields a
    "failed" result with a one-line message and the run goes on. The next case is read and prepared, and the
    previous one written, in background threads while the network runs. `on_start(case, n_slices)` and
    `on_slices(n)` report progress.
    """
    todo: list[Case] = []
    for case in cases:
        if not options.overwrite and is_finished(case):
            yield CaseResult.skipped(case)
        else:
            todo.append(case)
    if not todo:
        return

    def load(case: Case) -> _Loaded:
        began = time.perf_counter()
        volume = io.read_volume(case.input, series=options.series, channel=options.channel)
        io.check_finite(volume)
        return _Loaded(volume, predictor.prepare(volume, options.plane), time.perf_counter() - began)

    with ThreadPoolExecutor(1, thread_name_prefix="swinseg-read") as reader, ThreadPoolExecutor(
        1, thread_name_prefix="swinseg-write"
    ) as writer:
        loading: Future[_Loaded] = reader.submit(load, todo[0])
        writing: Future[CaseResult] | None = None
        for position, case in enumerate(todo):
            try:
                loaded = loading.result()
            except Exception as error:  # noqa: BLE001 - isolate the case, report it, go on
                loaded = _failure(error)
            if position + 1 < len(todo):
                loading = reader.submit(load, todo[position + 1])
            if isinstance(loaded, str):
                yield CaseResult(case, "failed", loaded)
                continue
            try:
                result, labels, probabilities = _predict_loaded(predictor, case, loaded, options, on_start, on_slices)
            except Exception as error:  # noqa: BLE001
                yield CaseResult(case, "failed", _failure(error))
                continue
            if writing is not None:
                yield writing.result()
            writing = writer.submit(_write_case, result, loaded.volume, labels, probabilities)
        if writing is not None:
            yield writing.result()


def _failure(error: BaseException) -> str:
    if isinstance(error, SwinsegError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _predict_loaded(
    predictor: Predictor,
    case: Case,
    loaded: _Loaded,
    options: RunOptions,
    on_start: Callable[[Case, int], None] | None,
    on_slices: SliceProgress | None,
) -> tuple[CaseResult, np.ndarray, np.ndarray | None]:
    began = time.perf_counter()
    if on_start is not None:
        on_start(case, loaded.prepared.slices.shape[0])
    labels, probabilities = predictor.predict_prepared(
        loaded.prepared, probabilities=case.probabilities is not None, progress=on_slices
    )
    labels = predictor.postprocess(labels, options.classes, options.keep_largest)
    counts = np.bincount(labels.ravel(), minlength=predictor.num_classes)
    names = predictor.card.classes
    voxels = {names[k]: int(counts[k]) for k in range(1, len(names)) if counts[k]}
    restore = loaded.prepared.restore
    result = CaseResult(
        case,
        "done",
        shape=loaded.volume.array.shape,
        spacing=loaded.volume.spacing,
        seconds=loaded.seconds + time.perf_counter() - began,
        voxels=voxels,
    )
    return result, restore(labels), None if probabilities is None else restore(probabilities)


def _write_case(
    result: CaseResult, volume: io.Volume, labels: np.ndarray, probabilities: np.ndarray | None
) -> CaseResult:
    began = time.perf_counter()
    case = result.case
    try:
        if probabilities is not None and case.probabilities is not None:
            io.write_volume(case.probabilities, probabilities, volume)
        io.write_volume(case.output, labels, volume)
    except Exception as error:  # noqa: BLE001
        return CaseResult(case, "failed", _failure(error))
    result.seconds += time.perf_counter() - began
    return result
