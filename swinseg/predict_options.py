"""How a prediction runs: the options (checked once, when made) and where they resolve to a device, an autocast
precision and a backend (`resolve_runtime`, the one place their combinations are decided)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from swinseg.backends import resolve_backend
from swinseg.choices import BACKENDS, PRECISIONS, PROTOCOLS
from swinseg.defaults import TILE_OVERLAP
from swinseg.device import resolve_device, resolve_precision
from swinseg.errors import SwinsegError

DEFAULT_BATCH = {"torch": 16, "onnxruntime": 8, "openvino": 8}


@dataclass(frozen=True)
class PredictOptions:
    """What a Predictor is asked for, checked on creation.

    `device`: auto, cpu, cuda, cuda:N (or a torch.device). `batch_size`: network inputs (tiles, or whole slices)
    per forward pass (None: 16 on torch, 8 on the ONNX runtimes: as fast there, half their activation memory).
    `precision`: auto (bf16/fp16 autocast on CUDA, fp32 on CPU), bf16, fp16 or fp32. `tta`: average the softmax
    over horizontal/vertical flips (4 passes). `protocol`: "fast", or "reference", the published evaluation path
    (one slice per pass, float32, torch, no TTA, labels only). `tile_overlap`: share of a tile its neighbours
    overlap (cards with a target spacing). `backend`: torch, onnxruntime, openvino, or auto (torch on CUDA; on
    CPU OpenVINO, else onnxruntime, else torch); see swinseg.backends.
    """

    device: str | torch.device = "auto"
    batch_size: int | None = None
    precision: str = "auto"
    tta: bool = False
    protocol: str = "fast"
    tile_overlap: float = TILE_OVERLAP
    backend: str = "torch"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise SwinsegError(f"--protocol {self.protocol!r}: expected one of {', '.join(PROTOCOLS)}")
        if self.precision not in PRECISIONS:
            raise SwinsegError(f"--precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        if self.backend not in BACKENDS:
            raise SwinsegError(f"--backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise SwinsegError(f"--batch-size {self.batch_size}: must be at least 1")
        if not 0.0 <= self.tile_overlap < 1.0:
            raise SwinsegError(f"--tile-overlap {self.tile_overlap}: must be in [0, 1)")
        object.__setattr__(self, "tile_overlap", float(self.tile_overlap))
        if not self.reference:
            return
        if self.tta:
            raise SwinsegError("--tta is not part of --protocol reference (the published path has no TTA)")
        if self.batch_size not in (None, 1):
            raise SwinsegError("--protocol reference predicts one slice per pass; drop --batch-size")
        if self.backend not in ("auto", "torch"):
            raise SwinsegError(f"--protocol reference is the published torch path; --backend {self.backend} cannot "
                               "reproduce it exactly (drop one)")

    @property
    def reference(self) -> bool:
        """Whether this is the published evaluation path (labels only, one slice per pass)."""
        return self.protocol == "reference"

    def check_probabilities(self) -> None:
        """Raise where probabilities are asked of a path that gives labels only (the reference protocol)."""
        if self.reference:
            raise SwinsegError("--save-probabilities is not available with --protocol reference (labels only)")

    def batch_for(self, backend: str) -> int:
        """Network inputs per forward pass on `backend` (a resolved backend: torch, onnxruntime or openvino)."""
        return 1 if self.reference else self.batch_size or DEFAULT_BATCH[backend]


@dataclass(frozen=True)
class Runtime:
    """Where the network runs: the device, the autocast dtype (None: float32) and the backend."""

    device: torch.device
    dtype: torch.dtype | None
    backend: str


def resolve_runtime(options: PredictOptions, graph: Path | None = None) -> Runtime:
    """The device, precision and backend `options` stand for, for a torch model or an exported graph (`graph`,
    its path). The reference protocol is torch in float32; an ONNX backend (named, or the only one a graph runs
    on) defaults to the CPU and runs float32; the auto backend is chosen by swinseg.backends.resolve_backend."""
    if options.reference and graph is not None:
        raise SwinsegError(f"{graph}: --protocol reference runs the torch network; pass the torch checkpoint")
    device = options.device
    if device == "auto" and (graph is not None or options.backend not in ("auto", "torch")):
        device = "cpu"
    device = device if isinstance(device, torch.device) else resolve_device(device)
    if options.reference:
        return Runtime(device, None, "torch")
    dtype = resolve_precision(options.precision, device)
    backend = resolve_backend(options.backend, device, onnx_only=graph is not None, dtype=dtype)
    if backend != "torch" and dtype is not None:
        raise SwinsegError(f"--backend {backend} runs float32; drop --precision (or use --backend torch)")
    return Runtime(device, dtype, backend)
