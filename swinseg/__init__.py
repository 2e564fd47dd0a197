"""swinseg: medical image segmentation with Swin-Unet.

Public API (documented in the README): SwinUnet, SwinUnetConfig, build_model, load_model.
Heavy modules (torch, timm) are imported lazily, so `import swinseg` stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["SwinUnet", "SwinUnetConfig", "build_model", "load_model", "__version__"]

_LAZY = {
    "SwinUnet": "swinseg.model",
    "SwinUnetConfig": "swinseg.config",
    "build_model": "swinseg.model",
    "load_model": "swinseg.weights",
}

if TYPE_CHECKING:  # pragma: no cover
    from swinseg.config import SwinUnetConfig
    from swinseg.model import SwinUnet, build_model
    from swinseg.weights import load_model


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'swinseg' has no attribute {name!r}")
