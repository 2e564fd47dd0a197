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

Running many cases with one model (skipping, isolating failures, overlapping I/O) is swinseg.runner's job.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from swinseg import io, postprocess
from swinseg.backends import (
    ONNX_SUFFIX,
    Network,
    OnnxGraph,
    cache_folder,
    cached_graph,
    load_traced,
    open_network,
    read_onnx,
    resolve_backend,
)
from swinseg.choices import PROTOCOLS
from swinseg.config import ModelCard, load_card
from swinseg.defaults import TILE_OVERLAP
from swinseg.device import resolve_device, resolve_precision
from swinseg.errors import SwinsegError
from swinseg.preprocess import (
    PreparedVolume,
    gaussian_importance,
    grid_size,
    pad_margins,
    prepare_volume,
    resample_images,
    resize_slices,
    scale_intensities,
    slice_stack,
    tile_corners,
)
from swinseg.qc import Agreement
from swinseg.store import ModelSource

DEFAULT_BATCH = {"torch": 16, "onnxruntime": 8, "openvino": 8}
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # none, left-right, up-down, both
SliceProgress = Callable[[int], None]


def label_dtype(num_classes: int) -> type[np.unsignedinteger]:
    """uint8 labels, uint16 beyond 256 classes."""
    return np.uint8 if num_classes <= 256 else np.uint16


class Predictor:
    """A model kept on its device, predicting label maps slice by slice in batches.

    `precision`: auto (bf16/fp16 autocast on CUDA, fp32 on CPU), bf16, fp16 or fp32. `tta`: average the
    softmax over horizontal/vertical flips (4 passes). `batch_size`: network inputs (tiles, or whole slices)
    per forward pass (default 16 on torch, 8 on the ONNX runtimes: as fast there, half their activation memory).
    `tile_overlap`: share of a tile its neighbours overlap (cards with a target spacing).
    `protocol`: "fast" or "reference" (see the module doc; reference forces batch size 1, float32 and no TTA).
    `backend`: torch, onnxruntime, openvino, or auto (torch on CUDA; on CPU OpenVINO, else onnxruntime, else
    torch); see swinseg.backends. `model` is a torch module, or an exported graph (`read_onnx`) for the ONNX ones.
    """

    def __init__(
        self,
        model: torch.nn.Module | OnnxGraph,
        card: ModelCard,
        *,
        device: str | torch.device = "auto",
        batch_size: int | None = None,
        precision: str = "auto",
        tta: bool = False,
        protocol: str = "fast",
        tile_overlap: float = TILE_OVERLAP,
        backend: str = "torch",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise SwinsegError(f"--protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if batch_size is not None and batch_size < 1:
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
        network = model.card.network if isinstance(model, OnnxGraph) else model.config
        num_classes = network.num_classes
        if num_classes != len(card.classes):
            where = f" ({card.source})" if card.source else ""
            raise SwinsegError(
                f"model card {card.name!r}{where} names {len(card.classes)} classes but the network predicts "
                f"{num_classes}"
            )
        if protocol == "reference" and backend not in ("auto", "torch"):
            raise SwinsegError(f"--protocol reference is the published torch path; --backend {backend} cannot "
                               "reproduce it exactly (drop one)")
        if protocol == "reference" and isinstance(model, OnnxGraph):
            raise SwinsegError(f"{model.path}: --protocol reference runs the torch network; pass the torch checkpoint")
        cpu_only = isinstance(model, OnnxGraph) or backend not in ("auto", "torch")
        if device == "auto" and cpu_only:
            device = "cpu"
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.dtype = None if protocol == "reference" else resolve_precision(precision, self.device)
        self.backend = "torch" if protocol == "reference" else resolve_backend(
            backend, self.device, onnx_only=isinstance(model, OnnxGraph), dtype=self.dtype)
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model  # the torch module, or the exported graph
        self.notes: list[str] = []  # what the user should hear about (an export made now, a fallback to torch)
        self.network = self._open_network(model, card, fall_back=backend == "auto")
        self.card = card
        self.batch_size = 1 if protocol == "reference" else batch_size or DEFAULT_BATCH[self.backend]
        self.tta = tta
        self.agreement: Agreement | None = None  # set (swinseg.qc): flips counted against their consensus with TTA
        self.protocol = protocol
        self.tile_overlap = float(tile_overlap)
        self.img_size = network.img_size
        self.num_classes = num_classes
        self._label_dtype = torch.uint8 if label_dtype(num_classes) == np.uint8 else torch.int32

    def _open_network(self, model: torch.nn.Module | OnnxGraph, card: ModelCard, fall_back: bool) -> Network:
        """The backend's network; a torch model on an ONNX backend goes through the export cache. With
        `fall_back` (backend auto), an export or cache that fails means torch, with a note saying why."""
        if self.backend == "torch" or isinstance(model, OnnxGraph):
            return open_network(self.backend, model, card, self.device, self.dtype)
        try:
            path, built = cached_graph(model, card)
            graph = OnnxGraph(path, card, openvino_cache=cache_folder() / "openvino")
            network = open_network(self.backend, graph, card, self.device, self.dtype)
        except SwinsegError as error:
            if not fall_back:
                raise
            self.notes.append(f"{error}; predicting with torch instead")
            self.backend = "torch"
            return open_network("torch", model, card, self.device, self.dtype)
        if built:
            self.notes.append(f"network exported to ONNX for {self.backend} once (cache: {path.parent})")
        return network

    @property
    def target_spacing(self) -> tuple[float, float] | None:
        """The card's in-plane target spacing (mm), None for the whole-slice resize."""
        return self.card.preprocessing.spacing

    # ------------------------------------------------------------------------------------------ slices

    def predict_slices(
        self, slices: np.ndarray, *, spacing: tuple[float, float] | None = None, probabilities: bool = False,
        progress: SliceProgress | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Labels (D, H, W) (uint8, uint16 beyond 256 classes) for normalised slices (D, H, W) float32 whose
        pixels are `spacing` (rows, columns) mm apart (needed by cards with a target spacing); with
        `probabilities`, (labels, softmax probabilities (C, D, H, W) float16)."""
        return self._labels_and_probabilities(slices, None, spacing, probabilities, progress)

    def _labels_and_probabilities(
        self, slices: np.ndarray, bounds: tuple[float, float] | None, spacing: tuple[float, float] | None,
        probabilities: bool, progress: SliceProgress | None, exact: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if not probabilities:
            return self._run(slices, bounds, spacing, None, progress)
        if self.protocol == "reference":
            raise SwinsegError("--save-probabilities is not available with --protocol reference (labels only)")
        scores = np.empty((self.num_classes, *slices.shape), dtype=np.float32 if exact else np.float16)
        return self._run(slices, bounds, spacing, scores, progress), scores

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
        context = self.card.preprocessing.context_slices
        for start in range(0, depth, step):
            stop = min(start + step, depth)
            chunk = slice_stack(slices, start, stop, context)
            chunk = chunk if bounds is None else scale_intensities(chunk, *bounds)
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
            except torch.cuda.OutOfMemoryError as error:
                raise SwinsegError(
                    f"out of GPU memory on {self.device} at --batch-size {self.batch_size}; use a smaller one"
                ) from error
            if progress is not None:
                progress(stop - start)
        return labels

    def _network_scores(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) float32 for network inputs (N, 1 or 2k+1, S, S): logits, or flip-averaged softmax with
        TTA."""
        if not self.tta:
            return self.network(images)
        total, flips = None, []
        for dims in TTA_FLIPS:
            probs = torch.softmax(self.network(images.flip(dims) if dims else images), dim=1)
            probs = probs.flip(dims) if dims else probs
            total = probs if total is None else total + probs
            if self.agreement is not None:
                flips.append(probs.argmax(dim=1))
        if self.agreement is not None:
            consensus = total.argmax(dim=1)
            for labels in flips:
                self.agreement.add(labels, consensus)
        return total / len(TTA_FLIPS)

    def _whole_slice_scores(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) scores at the slice size for slices (B, [2k+1,] H, W): the whole slice resized to
        img_size."""
        size = tuple(batch.shape[-2:])
        scores = self._network_scores(_with_channels(resize_slices(batch, self.img_size, order=3)))
        # Channels-last makes the class axis contiguous: the resize and the argmax over classes run ~4x faster.
        scores = scores.contiguous(memory_format=torch.channels_last)
        if tuple(scores.shape[-2:]) == size:
            return scores
        # Linear resize back, as scipy's order-1 zoom (align_corners) but as torch's sparse kernel: no matmuls.
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=True)

    def _tiled_scores(self, batch: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, C, H, W) scores at the slice size for slices (B, [2k+1,] H, W): resampled to the target spacing
        (`grid` pixels), padded to at least one tile, tiled, weighted accumulation, resampled back."""
        size, tile = tuple(batch.shape[-2:]), self.img_size
        images = resample_images(_with_channels(batch), grid)
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
        logits = self.network(_with_channels(resize_slices(batch, self.img_size, order=3)))
        labels = torch.softmax(logits, dim=1).argmax(dim=1)
        return resize_slices(labels, (height, width), order=0)

    # ----------------------------------------------------------------------------------------- volumes

    def prepare(self, volume: io.Volume, plane: str | None = None) -> PreparedVolume:
        """The volume laid out for this model by swinseg.preprocess (`plane`: default the card's)."""
        return prepare_volume(volume, self.card.preprocessing, plane)

    def predict_prepared(
        self, prepared: PreparedVolume, *, probabilities: bool = False, progress: SliceProgress | None = None,
        exact: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Labels (and probabilities (C, D, H, W) float16 if asked, float32 with `exact`) in the prepared layout."""
        return self._labels_and_probabilities(prepared.slices, prepared.bounds, prepared.spacing, probabilities,
                                              progress, exact)

    @staticmethod
    def slice_count(prepared: PreparedVolume) -> int:
        """Slices a prediction of `prepared` goes through (for progress bars)."""
        return prepared.slices.shape[0]

    def predict_volume(
        self,
        volume: io.Volume,
        *,
        plane: str | None = None,
        classes: Sequence[int] | None = None,
        keep_largest: bool = False,
        probabilities: bool = False,
        progress: SliceProgress | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Labels in the volume's own array order (write them with `io.write_volume(path, labels, volume)`);
        with `probabilities`, (labels, softmax probabilities (C, ...) float16), both in that order.
        Post-processing (classes, keep_largest) applies to the labels only."""
        prepared = self.prepare(volume, plane)
        if not probabilities:
            labels = self.predict_prepared(prepared, progress=progress)
            return np.ascontiguousarray(prepared.restore(self.postprocess(labels, classes, keep_largest)))
        labels, scores = self.predict_prepared(prepared, probabilities=True, progress=progress)
        labels = self.postprocess(labels, classes, keep_largest)
        return np.ascontiguousarray(prepared.restore(labels)), np.ascontiguousarray(prepared.restore(scores))

    @staticmethod
    def postprocess(labels: np.ndarray, classes: Sequence[int] | None, keep_largest: bool) -> np.ndarray:
        """Class subset, then the largest connected component per class (in place)."""
        if classes is not None:
            postprocess.keep_classes(labels, classes)
        if keep_largest:
            postprocess.keep_largest_component(labels)
        return labels


def _with_channels(batch: torch.Tensor) -> torch.Tensor:
    """Network inputs (B, C, H, W) from slices (B, H, W) (one channel) or slice stacks (B, 2k+1, H, W)."""
    return batch.unsqueeze(1) if batch.ndim == 3 else batch


def _mm(spacing: tuple[float, ...] | None) -> str:
    return "x".join(f"{s:g}" for s in spacing or ())


# ------------------------------------------------------------------------------------------- model source


def load_source(source: ModelSource, *, backend: str = "auto", device: str = "auto", precision: str = "auto",
                protocol: str = "fast", prepared: bool = True) -> tuple[torch.nn.Module | OnnxGraph, ModelCard]:
    """The network and card of one model that swinseg.store.resolve named. A stored model's files are checked
    against their sha256, and what it has prepared is used as it is, so that no network is built: its ONNX
    export (with its OpenVINO cache) where the backend will be an ONNX runtime, its TorchScript trace for torch
    on the CPU (`prepared=False`: the checkpoint itself)."""
    entry = source.entry
    if entry is None:
        return load_predictor_model(model=source.card, weights=source.weights, checkpoint=source.checkpoint)
    card = entry.card
    if source.onnx is not None and (source.checkpoint is None or prepared and _runs_onnx(backend, device, precision,
                                                                                         protocol)):
        return OnnxGraph(entry.verified(source.onnx), card, openvino_cache=entry.openvino_cache), card
    if prepared and source.traced is not None and resolve_device(device).type == "cpu":
        return load_traced(entry.verified(source.traced), card), card
    from swinseg.weights import load_checkpoint

    assert source.checkpoint is not None
    return load_checkpoint(entry.verified(source.checkpoint))


def _runs_onnx(backend: str, device: str, precision: str, protocol: str) -> bool:
    """Whether a Predictor with these options would run an ONNX runtime (as Predictor resolves them)."""
    if protocol == "reference":
        return False
    target = resolve_device("cpu" if device == "auto" and backend not in ("auto", "torch") else device)
    return resolve_backend(backend, target, dtype=resolve_precision(precision, target)) != "torch"


def load_predictor_model(
    *, model: str | None = None, weights: str | Path | None = None, checkpoint: str | Path | None = None
) -> tuple[torch.nn.Module | OnnxGraph, ModelCard]:
    """The network and card from `--model CARD [--weights FILE]` or `--checkpoint FILE [--model CARD]`.

    A card without --weights uses the weight file it names (`weights:` in its YAML). An exported .onnx file
    (`swinseg export`) is a checkpoint with its card inside, for the ONNX backends.
    """
    from swinseg.weights import load_checkpoint

    if weights is not None and checkpoint is not None:
        raise SwinsegError("give either --weights (with --model) or --checkpoint, not both")
    if weights is not None and model is None:
        raise SwinsegError("--weights needs --model CARD (or pass a swinseg checkpoint with --checkpoint)")
    if model is None and checkpoint is None:
        raise SwinsegError("no model: give --checkpoint FILE, or --model CARD with --weights FILE")
    if checkpoint is not None and str(checkpoint).lower().endswith(ONNX_SUFFIX):
        if model is not None:
            raise SwinsegError(f"{checkpoint}: an exported network carries its own card; drop --model")
        graph = read_onnx(checkpoint)
        return graph, graph.card
    card = load_card(model) if model is not None else None
    path = checkpoint if checkpoint is not None else weights
    if path is None:
        assert card is not None
        if card.weights is None:
            raise SwinsegError(f"--model {model}: the card names no weight file; give --weights FILE")
        path = card.weights
    return load_checkpoint(Path(path), card)
