"""Inference backends: the network as one function from network inputs (N, 1, S, S) to logits (N, C, S, S).

- torch: the SwinUnet itself, under autocast on CUDA (the only GPU backend today);
- onnxruntime / openvino: an ONNX export of it, run in float32 on the CPU (`swinseg predict` end to end about
  1.8x and 2.2x faster than torch eager on 2 cores; benchmarks/predict_speed.py).

An ONNX graph comes from `swinseg export` (a .onnx file whose metadata holds the card, so it is a checkpoint
in its own right) or, for a torch checkpoint, from the cache: exported on first use, verified against torch,
stored under `cache_folder()` by a digest of the weights, card and versions, and checked by its own sha256 on
every use (an entry that fails is rebuilt, never trusted). This module is where a GPU runtime (TensorRT, CUDA
execution provider) would plug in.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import io as bytes_io
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swinseg import __version__
from swinseg.choices import BACKENDS
from swinseg.config import ModelCard
from swinseg.device import autocast
from swinseg.errors import SwinsegError
from swinseg.io import atomic_output, file_sha256

ONNX_SUFFIX = ".onnx"
TRACE_SUFFIX = ".torchscript.pt"
OPSET = 17
FORMAT = "swinseg-onnx-1"
TOLERANCE = 1e-4  # max |logit difference| an export may show against torch
PIP = {"onnxruntime": "pip install 'swinseg[onnx]'", "openvino": "pip install 'swinseg[openvino]'",
       "onnx": "pip install 'swinseg[onnx]'"}
WHAT = {"onnxruntime": "the onnxruntime backend", "openvino": "the openvino backend", "onnx": "ONNX export (onnx)"}
Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OnnxGraph:
    """An exported network file and the card its metadata carries."""

    path: Path
    card: ModelCard
    openvino_cache: Path | None = None  # OpenVINO's compiled-model cache, where the file's content is fixed


def installed(package: str) -> bool:
    """Whether `package` can be imported (without importing it)."""
    return importlib.util.find_spec(package) is not None


def _require(package: str) -> Any:
    if not installed(package):
        raise SwinsegError(f"{WHAT[package]} is not installed: {PIP[package]}")
    try:
        return importlib.import_module(package)
    except Exception as error:  # noqa: BLE001 - a broken install fails in many ways (ImportError, OSError, ...)
        reason = (str(error).splitlines() or [""])[0][:200]
        raise SwinsegError(f"{WHAT[package]} is installed but fails to import ({type(error).__name__}: {reason}); "
                           f"reinstall: {PIP[package]}") from error


def resolve_backend(name: str, device: torch.device, *, onnx_only: bool = False,
                    dtype: torch.dtype | None = None) -> str:
    """The backend `name` stands for: auto = torch on CUDA or with a reduced precision (`dtype`); on CPU
    OpenVINO if installed, else onnxruntime, else torch. `onnx_only`: the model is an exported .onnx file."""
    if name not in BACKENDS:
        raise SwinsegError(f"--backend {name!r}: expected one of {', '.join(BACKENDS)}")
    if onnx_only and device.type != "cpu":
        raise SwinsegError(f"an exported {ONNX_SUFFIX} network runs on the CPU; use --device cpu")
    if name == "auto":
        if onnx_only or device.type == "cpu" and dtype is None:
            name = next((b for b in ("openvino", "onnxruntime") if installed(b)), "torch")
        else:
            name = "torch"
    if name == "torch" and onnx_only:
        raise SwinsegError(f"an exported {ONNX_SUFFIX} network runs on onnxruntime or openvino, not torch: "
                           f"{PIP['onnxruntime']}, or pass the torch checkpoint")
    if name != "torch" and device.type != "cpu":
        raise SwinsegError(f"--backend {name} runs on the CPU; use --device cpu (or --backend torch on {device})")
    if name != "torch":
        _require(name)
    return name


# ------------------------------------------------------------------------------------------------ export


def export_onnx(model: torch.nn.Module, card: ModelCard, path: str | Path, *, digest: str = "") -> str:
    """Write `model` as ONNX (opset 17, dynamic batch axis, the card and versions in its metadata), atomically,
    after checking it against torch on a random batch (max logit difference <= 1e-4 per unit of the largest
    logit); returns the sha256 of the file written."""
    onnx = _require("onnx")
    if not any(installed(b) for b in ("onnxruntime", "openvino")):
        raise SwinsegError(f"{path}: exporting needs onnxruntime or openvino to verify the graph: {PIP['onnx']}")
    legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    model = model.to("cpu").eval()
    size, channels = model.config.img_size, card.preprocessing.input_channels
    example = torch.rand((2, channels, size, size), generator=torch.Generator().manual_seed(0))
    buffer = bytes_io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and tracer notes
        torch.onnx.export(model, (example,), buffer, **legacy, opset_version=OPSET, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    graph = onnx.load_from_string(buffer.getvalue())
    metadata = {"format": FORMAT, "swinseg_version": __version__, "torch_version": torch.__version__,
                "card": json.dumps(card.to_dict()), "source_digest": digest}
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=value)
    path = Path(path)
    with atomic_output(path) as tmp:
        onnx.save(graph, str(tmp))
        _verify(model, tmp, path, channels)
        return file_sha256(tmp)


def _verify(model: torch.nn.Module, exported: Path, path: Path, channels: int) -> None:
    """Raise unless the file at `exported` gives torch's logits (within TOLERANCE) on a batch of another size."""
    backend = next(b for b in ("onnxruntime", "openvino") if installed(b))
    size = model.config.img_size
    images = torch.rand((3, channels, size, size), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(images).float()
    got = _onnx_network(backend, exported)(images)
    difference = float((got - expected).abs().max())
    tolerance = TOLERANCE * max(1.0, float(expected.abs().max()))  # float32 sums reorder: error grows with size
    if not difference <= tolerance:
        raise SwinsegError(f"{path}: the ONNX export differs from torch by {difference:.3g} in the logits "
                           f"(tolerance {tolerance:.3g}); not written")


def read_onnx(path: str | Path) -> OnnxGraph:
    """An exported swinseg network and its card; a clear error for other ONNX files."""
    onnx = _require("onnx")
    path = Path(path)
    if not path.is_file():
        raise SwinsegError(f"{path}: no such file")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # noqa: BLE001 - protobuf raises its own DecodeError family
        raise SwinsegError(f"{path}: not a readable ONNX file ({type(error).__name__})") from error
    metadata = {entry.key: entry.value for entry in graph.metadata_props}
    if metadata.get("format") != FORMAT:
        raise SwinsegError(f"{path}: an ONNX file without swinseg's metadata (made by `swinseg export`); "
                           "export the checkpoint with swinseg")
    try:
        card = ModelCard.from_dict(json.loads(metadata["card"]), source=None)
    except (KeyError, json.JSONDecodeError, SwinsegError) as error:
        raise SwinsegError(f"{path}: invalid model card in the ONNX metadata ({error})") from error
    return OnnxGraph(path, card)


# ------------------------------------------------------------------------------------------------ traced


def trace_network(model: torch.nn.Module, card: ModelCard, path: str | Path) -> str:
    """Write `model` traced to TorchScript (CPU, float32, any batch size), atomically, after checking it against
    the module (as `export_onnx`); returns the sha256 of the file. Loading it needs neither timm nor building
    the network: swinseg.store keeps one beside each stored model for CPU prediction with torch."""
    model = model.to("cpu").eval()
    size, channels = model.config.img_size, card.preprocessing.input_channels
    example = torch.rand((2, channels, size, size), generator=torch.Generator().manual_seed(0))
    images = torch.rand((3, channels, size, size), generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on the shape checks, TorchScript's deprecation
        traced = torch.jit.trace(model, (example,), check_trace=False)
        expected, got = model(images), traced(images)
    difference = float((got - expected).abs().max())
    path = Path(path)
    if not difference <= TOLERANCE * max(1.0, float(expected.abs().max())):
        raise SwinsegError(f"{path}: the traced network differs from torch by {difference:.3g}; not written")
    with atomic_output(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(traced, str(tmp))
        return file_sha256(tmp)


class TracedNetwork(torch.nn.Module):
    """A network traced by `trace_network`, with the configuration Predictor reads from a SwinUnet."""

    def __init__(self, traced: torch.nn.Module, config: Any) -> None:
        super().__init__()
        self.traced, self.config = traced, config

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.traced(images)


def load_traced(path: Path, card: ModelCard) -> TracedNetwork:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript's deprecation notice
        try:
            traced = torch.jit.load(str(path), map_location="cpu")
        except Exception as error:  # noqa: BLE001 - TorchScript raises RuntimeError for most problems
            raise SwinsegError(f"{path}: torch cannot load this traced network ({_first_line(error)})") from error
    return TracedNetwork(traced, card.network).eval()


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


# ------------------------------------------------------------------------------------------------- cache


def cache_folder() -> Path:
    """Where exported graphs are cached: $SWINSEG_CACHE, else $XDG_CACHE_HOME/swinseg, else ~/.cache/swinseg."""
    if os.environ.get("SWINSEG_CACHE"):
        return Path(os.environ["SWINSEG_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "swinseg"
    try:
        return Path.home() / ".cache" / "swinseg"
    except RuntimeError as error:
        raise SwinsegError("no home folder for the ONNX cache; set SWINSEG_CACHE") from error


def network_digest(model: torch.nn.Module, card: ModelCard) -> str:
    """sha256 of the weights, the card (stored in the export), the network's code and the versions that shape
    the export (swinseg, torch, timm, onnx)."""
    import timm

    from swinseg import model as network_code

    digest = hashlib.sha256()
    versions = (FORMAT, str(OPSET), __version__, torch.__version__, timm.__version__, _version("onnx"))
    for part in (*versions, inspect.getsource(network_code), json.dumps(card.to_dict(), sort_keys=True)):
        digest.update(part.encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return ""




def cached_graph(model: torch.nn.Module, card: ModelCard) -> tuple[Path, bool]:
    """(the cached ONNX export of `model`, whether it was built now). An entry whose file does not match its
    recorded sha256 (truncated, edited, half-written) is rebuilt."""
    key = network_digest(model, card)
    folder = cache_folder() / "onnx"
    graph, checksum = folder / f"{key}{ONNX_SUFFIX}", folder / f"{key}.sha256"
    try:
        if graph.is_file() and checksum.read_text(encoding="ascii").strip() == file_sha256(graph):
            return graph, False
    except OSError:
        pass
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SwinsegError(f"{folder}: cannot create the ONNX cache folder ({error.strerror}); set SWINSEG_CACHE "
                           "to a writable folder, or use --backend torch") from error
    written = export_onnx(model, card, graph, digest=key)  # sha256 of the verified file, not of what is there now
    with atomic_output(checksum) as tmp:
        tmp.write_text(written + "\n", encoding="ascii")
    return graph, True


# ------------------------------------------------------------------------------------------------ runtimes


def open_network(backend: str, model: torch.nn.Module | OnnxGraph, card: ModelCard, device: torch.device,
                 dtype: torch.dtype | None) -> Network:
    """The network function for a resolved backend (swinseg.predict_options.resolve_runtime): `model` is a torch
    module or an exported graph (a torch module on an ONNX backend is exported through the cache first); `dtype`
    is torch's autocast (the ONNX runtimes run float32)."""
    if backend == "torch":
        if not isinstance(model, torch.nn.Module):
            raise SwinsegError(f"{model.path}: an exported network runs on onnxruntime or openvino, not torch")
        return _torch_network(model, device, dtype)
    graph = model if isinstance(model, OnnxGraph) else OnnxGraph(cached_graph(model, card)[0], card,
                                                                 openvino_cache=cache_folder() / "openvino")
    return _onnx_network(backend, graph.path, graph.openvino_cache)


def _onnx_network(backend: str, path: Path, openvino_cache: Path | None = None) -> Network:
    return _onnxruntime_network(path) if backend == "onnxruntime" else _openvino_network(path, openvino_cache)


def _torch_network(model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None) -> Network:
    def run(images: torch.Tensor) -> torch.Tensor:
        with autocast(device, dtype):
            return model(images).float()

    return run


def _onnxruntime_network(path: Path) -> Network:
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = False  # activations freed after each run: peak RSS as torch's, same speed
    options.intra_op_num_threads = torch.get_num_threads()  # torch's setting (OMP_NUM_THREADS, torchrun shards)
    options.log_severity_level = 3  # errors only: no raw runtime warnings on the terminal
    # No busy-waiting between runs: torch resamples and accumulates the tiles on the same cores meanwhile.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise SwinsegError(f"{path}: onnxruntime cannot load it ({str(error).splitlines()[0][:200]})") from error

    def run(images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(session.run(["logits"], {"images": array})[0])

    return run


def _openvino_config() -> dict[str, Any]:
    # f32: on CPUs with bf16 units OpenVINO would otherwise run bf16 (logits off by ~0.04); LATENCY: one stream
    # using every core, which suits one synchronous request per batch (THROUGHPUT measured 3x slower here).
    return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": torch.get_num_threads()}


@functools.cache
def _openvino_core() -> Any:
    """The process's one OpenVINO core. Each core's CPU plugin installs a signal stack of its own and restores
    the one before it when freed; cores freed out of order left a freed stack installed, and the next signal
    (a DataLoader worker's exit) killed the process."""
    return _require("openvino").Core()


def _openvino_network(path: Path, cache: Path | None = None) -> Network:
    """The compiled graph. With `cache` (for files whose content never changes under their path: the export
    cache's, a stored model's), compiled once per machine and setting, then read from OpenVINO's cache there."""
    core = _openvino_core()
    try:
        compiled = (_compile_cached(core, path, cache) if cache is not None
                    else core.compile_model(core.read_model(str(path)), "CPU", _openvino_config()))
    except Exception as error:  # noqa: BLE001 - openvino raises RuntimeError subclasses of its own
        raise SwinsegError(f"{path}: openvino cannot load it ({str(error).splitlines()[0][:200]})") from error
    return _OpenVinoNetwork(compiled)


def _compile_cached(core: Any, path: Path, cache: Path) -> Any:
    """compile_model from the file with a cache folder; without it where the folder cannot be used (read-only
    store, a blob another process is writing)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        return core.compile_model(str(path), "CPU", {**_openvino_config(), "CACHE_DIR": str(cache)})
    except Exception:  # noqa: BLE001 - any cache trouble: compile as before, uncached
        return core.compile_model(core.read_model(str(path)), "CPU", _openvino_config())


def warm_openvino_cache(path: Path, cache: Path) -> None:
    """Compile `path` once so that OpenVINO's cache in `cache` holds it (for this machine's settings)."""
    cache.mkdir(parents=True, exist_ok=True)
    _openvino_core().compile_model(str(path), "CPU", {**_openvino_config(), "CACHE_DIR": str(cache)})


class _OpenVinoNetwork:
    """A compiled OpenVINO model and its one infer request, held together (the request must not outlive the
    model it runs)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32)
        self.request.infer({0: array})
        return torch.from_numpy(np.array(self.request.get_output_tensor(0).data, copy=True))
