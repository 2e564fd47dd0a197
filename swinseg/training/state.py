"""Resumable training state: model, optimiser, scheduler, scaler, counters and every RNG, saved atomically.

The file is written with torch.save to a temporary file and renamed onto its name, so a run killed at any
moment leaves the previous complete state. It holds only tensors and plain Python types, so it loads with
`torch.load(weights_only=True)` (no arbitrary code runs when a state file is opened).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swinseg.errors import SwinsegError
from swinseg.io import atomic_output

STATE_VERSION = 1


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states as tensors and plain types."""
    py_version, py_internal, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"kind": np_kind, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of capture_rng_state (CUDA states are restored when as many devices are present)."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["gauss"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (tensors and plain types; include capture_rng_state() of every process) atomically."""
    payload = dict(state, version=STATE_VERSION)
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a state written by save_training_state (weights_only: no code runs); RNGs are not touched."""
    if not path.is_file():
        raise SwinsegError(f"{path}: no training state to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means a foreign or damaged file
        raise SwinsegError(f"{path}: not a readable swinseg training state ({type(error).__name__})") from error
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise SwinsegError(f"{path}: not a swinseg training state (version {STATE_VERSION} expected)")
    return state
