"""Batched slice inference: scans in, label maps out, in each scan's own geometry.

A volume goes through swinseg.preprocess (oriented to the card, sliced along its plane, intensities mapped to
[0, 1] batch by batch), then, on the device, the in-plane path the Predictor chose once (swinseg.slice_paths:
tiled, whole-slice, or the published reference path). TTA averages the softmax over flips of each network
input. Labels are streamed into a preallocated uint8 array: beyond the scan and its label map, memory is bounded
by one batch of slices. The result is mapped back to the scan's array order and written with the scan's
geometry.

Running many cases with one model (skipping, isolating failures, overlapping I/O) is swinseg.runner's job.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swinseg import io
from swinseg.backends import (
    ONNX_SUFFIX,
    Network,
    OnnxGraph,
    cache_folder,
    cached_graph,
    load_traced,
    open_network,
    read_onnx,
)
from swinseg.config import ModelCard, load_card
from swinseg.errors import SwinsegError
from swinseg.predict_options import PredictOptions, resolve_runtime
from swinseg.prediction import Prediction, SliceProgress, VolumePredictor, label_dtype
from swinseg.preprocess import PreparedVolume, prepare_volume, scale_intensities, slice_stack
from swinseg.qc import Agreement
from swinseg.slice_paths import Spacing, in_plane_path
from swinseg.store import ModelSource


def tta_flips(mirror_axes: tuple[int, ...] | None) -> tuple[tuple[int, ...], ...]:
    """The flips TTA averages (tensor dims, -2 rows and -1 columns): none and every combination of the slice
    axes the model's training flipped (all four when its card does not record them). A model that never saw a
    slice mirrored left-right would put the left kidney on the right: that flip is left out."""
    dims = [axis - 2 for axis in ((0, 1) if mirror_axes is None else mirror_axes)]
    return tuple(flip for count in range(len(dims) + 1) for flip in itertools.combinations(dims, count))


class Predictor(VolumePredictor):
    """A model kept on its device, predicting label maps slice by slice in batches.

    `options` (a PredictOptions), or its fields as keywords: `Predictor(model, card, device="cpu", tta=True)`.
    `model` is a torch module, or an exported graph (`read_onnx`) for the ONNX backends.
    """

    def __init__(self, model: torch.nn.Module | OnnxGraph, card: ModelCard, options: PredictOptions | None = None,
                 **settings: Any) -> None:
        if options is not None and settings:
            raise TypeError("give Predictor its PredictOptions or their fields as keywords, not both")
        options = options if options is not None else PredictOptions(**settings)
        self.options = options
        network = model.card.network if isinstance(model, OnnxGraph) else model.config
        if network.num_classes != len(card.classes):
            where = f" ({card.source})" if card.source else ""
            raise SwinsegError(
                f"model card {card.name!r}{where} names {len(card.classes)} classes but the network predicts "
                f"{network.num_classes}"
            )
        runtime = resolve_runtime(options, model.path if isinstance(model, OnnxGraph) else None)
        self.device, self.dtype, self.backend = runtime.device, runtime.dtype, runtime.backend
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model  # the torch module, or the exported graph
        self.notes: list[str] = []  # what the user should hear about (an export made now, a fallback to torch)
        self.network = self._open_network(model, card, fall_back=options.backend == "auto")
        self.card = card
        self.flips = tta_flips(card.mirror_axes) if options.tta else ((),)
        if options.tta and card.mirror_axes is not None and len(card.mirror_axes) < 2:  # one trained axis, or none
            self.notes.append(f"TTA flips along {('rows', 'columns')[card.mirror_axes[0]]} only: the model was trained "
                              "without other mirroring" if card.mirror_axes else
                              "TTA has nothing to average: the model was trained without mirroring")
        self.batch_size = options.batch_for(self.backend)
        self.agreement: Agreement | None = None  # set (swinseg.qc): flips counted against their consensus with TTA
        self.img_size = network.img_size
        self.num_classes = network.num_classes
        self.path = in_plane_path(card, options, self._network_scores, self.img_size, self.batch_size)
        self._label_dtype = torch.uint8 if label_dtype(self.num_classes) == np.uint8 else torch.int32

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

    @property
    def labels_only(self) -> bool:
        return self.options.reference

    def agreement_counter(self) -> Predictor | None:
        return self if len(self.flips) > 1 else None

    # ------------------------------------------------------------------------------------------ slices

    def predict_slices(self, slices: np.ndarray, *, spacing: Spacing = None, probabilities: bool = False,
                       progress: SliceProgress | None = None) -> Prediction:
        """Labels (D, H, W) for normalised slices (D, H, W) float32 whose pixels are `spacing` (rows, columns) mm
        apart (needed by cards with a target spacing); with `probabilities`, softmax probabilities (C, D, H, W)
        float16 too."""
        return self._predict(slices, None, spacing, probabilities, progress)

    def tiles_per_slice(self, size: tuple[int, int], spacing: Spacing) -> int:
        """Network inputs per slice of `size` at `spacing` (1 for the whole-slice resize)."""
        return self.path.tiles_per_slice(size, spacing)

    def _predict(self, slices: np.ndarray, bounds: tuple[float, float] | None, spacing: Spacing,
                 probabilities: bool, progress: SliceProgress | None, exact: bool = False) -> Prediction:
        """Labels (and probabilities) for `slices`; `bounds`: scale each batch from that range to [0, 1] first
        (None: the slices are normalised already)."""
        if slices.ndim != 3:
            raise ValueError(f"expected slices (D, H, W), got shape {slices.shape}")
        scores = None
        if probabilities:
            self.options.check_probabilities()
            scores = np.empty((self.num_classes, *slices.shape), dtype=np.float32 if exact else np.float16)
        labels = self._run(slices, bounds, spacing, scores, progress)
        return Prediction(labels, scores)

    @torch.inference_mode()
    def _run(self, slices: np.ndarray, bounds: tuple[float, float] | None, spacing: Spacing,
             probabilities: np.ndarray | None, progress: SliceProgress | None) -> np.ndarray:
        """Labels for `slices`, batch by batch, probabilities written into `probabilities` where given."""
        depth, height, width = slices.shape
        labels = np.empty((depth, height, width), dtype=label_dtype(self.num_classes))
        step = self.path.slices_per_batch((height, width), spacing)
        context = self.card.preprocessing.context_slices
        for start in range(0, depth, step):
            stop = min(start + step, depth)
            chunk = slice_stack(slices, start, stop, context)
            chunk = chunk if bounds is None else scale_intensities(chunk, *bounds)
            batch = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32)).to(self.device)
            try:
                batch_labels, probs = self.path.predict(batch, spacing, probabilities is not None)
                if probabilities is not None and probs is not None:
                    probabilities[:, start:stop] = probs.transpose(0, 1).to(torch.float16).cpu().numpy()
                labels[start:stop] = batch_labels.to(self._label_dtype).cpu().numpy()
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
        if len(self.flips) == 1:  # no TTA, or nothing the model was trained to see flipped
            return self.network(images)
        total, flips = None, []
        for dims in self.flips:
            probs = torch.softmax(self.network(images.flip(dims) if dims else images), dim=1)
            probs = probs.flip(dims) if dims else probs
            total = probs if total is None else total + probs
            if self.agreement is not None:
                flips.append(probs.argmax(dim=1))
        if self.agreement is not None:
            consensus = total.argmax(dim=1)
            for labels in flips:
                self.agreement.add(labels, consensus)
        return total / len(self.flips)

    # ----------------------------------------------------------------------------------------- volumes

    def prepare(self, volume: io.Volume, plane: str | None = None) -> PreparedVolume:
        """The volume laid out for this model by swinseg.preprocess (`plane`: default the card's)."""
        return prepare_volume(volume, self.card.preprocessing, plane)

    def predict_prepared(self, prepared: PreparedVolume, *, probabilities: bool = False,
                         progress: SliceProgress | None = None, exact: bool = False) -> Prediction:
        """Labels (and probabilities (C, D, H, W) float16 if asked, float32 with `exact`) in the prepared layout."""
        return self._predict(prepared.slices, prepared.bounds, prepared.spacing, probabilities, progress, exact)

    def slice_count(self, prepared: PreparedVolume) -> int:
        return prepared.slices.shape[0]


# ------------------------------------------------------------------------------------------- model source


def load_source(source: ModelSource, options: PredictOptions = PredictOptions(backend="auto"), *,
                prepared: bool = True) -> tuple[torch.nn.Module | OnnxGraph, ModelCard]:
    """The network and card of one model that swinseg.store.resolve named, for a Predictor given `options`. A
    stored model's files are checked against their sha256, and what it has prepared is used as it is, so that
    no network is built: its ONNX export (with its OpenVINO cache) where the backend will be an ONNX runtime,
    its TorchScript trace for torch on the CPU (`prepared=False`: the checkpoint itself)."""
    entry = source.entry
    if entry is None:
        return load_predictor_model(model=source.card, weights=source.weights, checkpoint=source.checkpoint)
    card = entry.card
    runtime = resolve_runtime(options) if prepared else None
    if source.onnx is not None and (source.checkpoint is None or runtime is not None and runtime.backend != "torch"):
        return OnnxGraph(entry.verified(source.onnx), card, openvino_cache=entry.openvino_cache), card
    if runtime is not None and source.traced is not None and runtime.device.type == "cpu":
        return load_traced(entry.verified(source.traced), card), card
    from swinseg.weights import load_checkpoint

    assert source.checkpoint is not None
    return load_checkpoint(entry.verified(source.checkpoint))


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
