"""Device selection and mixed precision: GPU first, CPU-correct."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from swinseg.choices import PRECISIONS
from swinseg.errors import SwinsegError


def resolve_device(spec: str = "auto") -> torch.device:
    """'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise SwinsegError(f"--device {spec}: CUDA is not available on this machine (use cpu or auto)")
        device = torch.device(spec)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SwinsegError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise SwinsegError(f"--device {spec!r}: expected auto, cpu, cuda or cuda:N")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `precision` on `device`; None means plain float32.

    'auto' is bf16 on CUDA devices that support it (fp16 otherwise) and fp32 on CPU: bf16 matmuls on CPUs
    without AVX512-BF16/AMX run about 30x slower than float32.
    """
    if precision not in PRECISIONS:
        raise SwinsegError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def precision_name(dtype: torch.dtype | None) -> str:
    """The --precision name of an autocast dtype (None: fp32)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Mixed precision on `device` when `dtype` is set; a no-op for float32."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def torchrun_rank(env: dict[str, str] | None = None) -> tuple[int, int, int] | None:
    """(RANK, WORLD_SIZE, LOCAL_RANK) when launched by torchrun with more than one process, else None."""
    env = dict(os.environ) if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return int(env["RANK"]), world, int(env.get("LOCAL_RANK", env["RANK"]))
    except (KeyError, ValueError) as error:
        raise SwinsegError("torchrun environment is incomplete: RANK/WORLD_SIZE/LOCAL_RANK must be integers") from error


def rank_device(spec: str, local_rank: int) -> str:
    """One device per torchrun rank: auto/cuda become cuda:LOCAL_RANK when CUDA is available."""
    spec = spec.strip().lower()
    if spec == "cuda" or (spec == "auto" and torch.cuda.is_available()):
        return f"cuda:{local_rank}"
    return spec
