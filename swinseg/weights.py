"""Weight files: import of reference Swin-Unet checkpoints, swinseg's own format (ImageNet initialisation from a
Swin-T classifier file: swinseg.pretrained).

Supported layouts (detected from the keys, see ``detect_layout``):

- ``swinseg``: swinseg's safetensors file; the metadata holds the model card (config, classes,
  preprocessing) and the swinseg version, so nothing else is needed to use it.
- ``swinseg-state``: a bare SwinUnet state dict (e.g. inside a training checkpoint) - needs a card.
- ``reference-unet``: a checkpoint of the reference Swin-Unet code (keys bare or prefixed ``swin_unet.`` /
  ``module.swin_unet.``; PatchMerging at the END of encoder stages; buffers saved).
- ``swin-official`` / ``swin-timm``: a Swin Transformer classifier (ImageNet), official
  (``{'model': ...}``, ``head.*``, downsample at stage end) or timm (``head.fc.*``, downsample at stage start).

Files are read with ``torch.load(weights_only=True)`` (no arbitrary unpickling) or safetensors.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from swinseg import __version__
from swinseg.config import ModelCard, SwinUnetConfig, load_card
from swinseg.errors import SwinsegError
from swinseg.model import PATCH_SIZE, SwinUnet

FORMAT_NAME = "swinseg"
_BUFFERS = ("relative_position_index", "attn_mask")
_UNET_PREFIXES = ("module.swin_unet.", "swin_unet.", "module.")
_SAFETENSORS_MAX_HEADER = 100_000_000


# --------------------------------------------------------------------------------------------- reading


@dataclass
class WeightFile:
    """A weight file's tensors in swinseg/timm layout plus what is known about it."""

    path: Path
    layout: str  # swinseg | swinseg-state | reference-unet | swin-official | swin-timm
    state: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)  # saved attn_mask / index buffers
    metadata: dict[str, str] = field(default_factory=dict)
    prefix: str = ""

    @property
    def is_classifier(self) -> bool:
        return self.layout in ("swin-official", "swin-timm")

    @property
    def parameter_count(self) -> int:
        return sum(v.numel() for v in self.state.values())


def read_weights(path: str | Path) -> WeightFile:
    """Read any supported weight file and convert it to swinseg's layout (encoder in timm's layout).

    Raises SwinsegError (one line naming the file) for missing, corrupt, truncated or unrelated files.
    """
    path = Path(path)
    if not path.is_file():
        raise SwinsegError(f"{path}: weight file not found")
    metadata: dict[str, str] = {}
    if _looks_like_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            raw: Any = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise SwinsegError(f"{path}: corrupt or truncated safetensors file ({_short(err)})") from err
    else:
        raw = _torch_load(path)
    state = _find_state_dict(raw, path)
    return _convert(path, state, metadata)


def _looks_like_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    size = int.from_bytes(head[:8], "little")
    return 0 < size < _SAFETENSORS_MAX_HEADER and head[8:9] == b"{"


def _torch_load(path: Path) -> Any:
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the outcome is reported below
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for bad files
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:
            raise SwinsegError(
                f"{path}: holds a pickled Python object ({found.group(1)}), not only tensors; "
                "refusing to unpickle it (weights_only)"
            ) from err
        detail = "" if "Weights only load failed" in str(err) else f": {_short(err)}"
        raise SwinsegError(
            f"{path}: not a readable PyTorch or safetensors weight file (corrupt, truncated or another format{detail})"
        ) from err


def _short(err: BaseException) -> str:
    """First sentence of an exception message, for one-line errors."""
    line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return line.split(". ")[0][:160]


def _find_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: the object itself or its 'model' / 'state_dict' / 'net' entry."""
    for _ in range(3):
        if isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
            return {str(k): v for k, v in raw.items()}
        if isinstance(raw, dict):
            inner = next((raw[k] for k in ("model", "state_dict", "net", "model_state") if k in raw), None)
            if inner is not None:
                raw = inner
                continue
            tensors = {k: v for k, v in raw.items() if isinstance(v, torch.Tensor)}
            if tensors:
                return tensors
        break
    raise SwinsegError(f"{path}: no tensors found; not a Swin or Swin-Unet weight file")


def detect_layout(keys: set[str]) -> str:
    """Name the layout of a prefix-free state dict (see the module docstring)."""
    unet = any(k.startswith("layers_up.") for k in keys)
    official_downsample = "layers.0.downsample.reduction.weight" in keys
    if unet:
        return "reference-unet" if official_downsample else "swinseg-state"
    if "patch_embed.proj.weight" not in keys or "layers.0.blocks.0.attn.qkv.weight" not in keys:
        return "unknown"
    if official_downsample or "head.weight" in keys:
        return "swin-official"
    return "swin-timm"


def _strip_prefix(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    for prefix in _UNET_PREFIXES:
        if any(k.startswith(prefix + "patch_embed.") for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, prefix
    return state, ""


def _convert(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str]) -> WeightFile:
    state, prefix = _strip_prefix(state)
    layout = detect_layout(set(state))
    if metadata.get("format") == FORMAT_NAME:
        layout = FORMAT_NAME
    if layout == "unknown":
        raise SwinsegError(f"{path}: not a Swin or Swin-Unet weight file (no patch_embed / layers.0 tensors)")
    buffers = {k: v for k, v in state.items() if k.endswith(_BUFFERS)}
    state = {k: v for k, v in state.items() if not k.endswith(_BUFFERS)}
    if layout in ("reference-unet", "swin-official"):
        state = {_official_to_timm_key(k): v for k, v in state.items()}
        buffers = {_official_to_timm_key(k): v for k, v in buffers.items()}
    return WeightFile(path, layout, state, buffers, metadata, prefix)


def _official_to_timm_key(key: str) -> str:
    """Official layout (PatchMerging at the end of stage i, ``head.``) -> timm's (start of stage i+1, ``head.fc.``)."""
    key = re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key)
    return "head.fc." + key[len("head."):] if key.startswith("head.") else key


# ------------------------------------------------------------------------------------ config inference


def _stage_depths(state: dict[str, torch.Tensor], prefix: str = "layers") -> list[int]:
    depths: dict[int, int] = {}
    for key in state:
        match = re.match(rf"^{prefix}\.(\d+)\.blocks\.(\d+)\.", key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths.get(stage, 0), block + 1)
    return [depths.get(i, 0) for i in range(max(depths) + 1)] if depths else []


def _table_window(table: torch.Tensor) -> int:
    side = math.isqrt(table.shape[0])
    return (side + 1) // 2


STEM_FIRST = "patch_embed.proj.0.weight"  # the first convolution of `patch_embed: conv` (swinseg.model.conv_stem)


def infer_encoder(weights: WeightFile) -> dict[str, Any]:
    """embed_dim, in_chans, depths, num_heads, window_size, mlp_ratio and (where possible) img_size."""
    state = weights.state
    stem = STEM_FIRST in state
    proj = state["patch_embed.proj.2.weight" if stem else "patch_embed.proj.weight"]
    depths = _stage_depths(state)
    heads = [state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1] for i in range(len(depths))]
    tables = [state[f"layers.{i}.blocks.0.attn.relative_position_bias_table"] for i in range(len(depths))]
    windows = [_table_window(table) for table in tables]
    window = max(windows)
    fc1 = state["layers.0.blocks.0.mlp.fc1.weight"]
    values: dict[str, Any] = {
        "embed_dim": proj.shape[0],
        "in_chans": state[STEM_FIRST].shape[1] if stem else proj.shape[1],
        "depths": tuple(depths),
        "num_heads": tuple(heads),
        "window_size": window,
        "mlp_ratio": fc1.shape[0] / fc1.shape[1],
    }
    img_size = _infer_img_size(weights.buffers, windows, window)
    if img_size:
        values["img_size"] = img_size
    return values


def _infer_img_size(buffers: dict[str, torch.Tensor], windows: list[int], window: int) -> int | None:
    """Image side from a saved shifted-window mask ((res/w)^2 windows) or from a stage whose window was
    clamped to its resolution (its relative-position table is smaller); None when neither is available."""
    for key, mask in buffers.items():
        match = re.match(r"^layers\.(\d+)\.blocks\.\d+\.attn_mask$", key)
        if match and mask.ndim == 3:
            stage = int(match.group(1))
            side = math.isqrt(mask.shape[0]) * math.isqrt(mask.shape[1])
            return side * PATCH_SIZE * 2**stage
    for stage, stage_window in enumerate(windows):
        if stage_window < window:
            return stage_window * PATCH_SIZE * 2**stage
    return None


def infer_unet_config(weights: WeightFile, base: SwinUnetConfig | None = None) -> SwinUnetConfig:
    """The SwinUnetConfig of a Swin-Unet state dict; what tensors cannot tell comes from `base` (a card)."""
    state = weights.state
    if "output.weight" not in state:
        raise SwinsegError(f"{weights.path}: Swin-Unet weights without output.weight (the class layer)")
    values = infer_encoder(weights)
    values["num_classes"] = state["output.weight"].shape[0]
    n = len(values["depths"])
    values["skip_scales"] = tuple(
        sorted(PATCH_SIZE * 2 ** (n - 1 - i) for i in range(1, n) if f"concat_back_dim.{i}.weight" in state)
    )
    if "conv_fuse.0.weight" in state:
        values["conv_skip"] = state["conv_fuse.0.weight"].shape[0]
    values["patch_embed"] = "conv" if STEM_FIRST in state else "linear"
    values["stem_skip"] = "stem_fuse.0.weight" in state
    if base is not None:
        values.setdefault("img_size", base.img_size)
        values["drop_path_rate"] = base.drop_path_rate
    elif "img_size" not in values:
        raise SwinsegError(f"{weights.path}: cannot tell the image size from the tensors; pass a model card")
    values["depths"] = tuple(values["depths"])
    try:
        return SwinUnetConfig(**values)
    except SwinsegError as err:
        raise SwinsegError(f"{weights.path}: inferred configuration is invalid: {err}") from err


# -------------------------------------------------------------------------------------- checkpoints


def _resolve_card(card: ModelCard | str | None) -> ModelCard | None:
    return load_card(card) if isinstance(card, (str, Path)) else card


def load_checkpoint(path: str | Path, card: ModelCard | str | None = None) -> tuple[SwinUnet, ModelCard]:
    """Load a trained Swin-Unet from any supported file; returns the eval-mode model and its card.

    swinseg files carry their card; for other files the configuration is inferred from the tensors and
    the rest (image size if not inferable, class names, preprocessing) comes from `card`. An import that
    does not cover every parameter fails with the missing and unexpected keys.
    """
    weights = read_weights(path)
    card = _resolve_card(card)
    if weights.is_classifier:
        raise SwinsegError(
            f"{weights.path}: a Swin classifier ({weights.layout}), not a trained Swin-Unet; "
            "use it as ImageNet initialisation (init_from_imagenet / swinseg train --pretrained)"
        )
    if weights.layout == FORMAT_NAME:
        stored = card_of(weights)
        if card is not None and card.preprocessing != stored.preprocessing:
            raise SwinsegError(
                f"{weights.path}: carries its own preprocessing ({stored.preprocessing.to_dict()}), which card "
                f"{card.name!r} would change; drop the card (it is for reference checkpoints)"
            )
        card = stored if card is None else _merge_card(card, stored.network, weights.path)
    else:
        config = infer_unet_config(weights, card.network if card else None)
        card = _merge_card(card, config, weights.path)
    model = SwinUnet(card.network, init_weights=False)  # every parameter is loaded next (strict)
    _load_strict(model, weights)
    return model.eval(), card


def card_of(weights: WeightFile) -> ModelCard:
    """The card a swinseg checkpoint carries in its metadata (without building its network)."""
    try:
        values = json.loads(weights.metadata["card"])
        return ModelCard.from_dict(values)
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise SwinsegError(f"{weights.path}: swinseg file without a valid model card in its metadata") from error
    except SwinsegError as err:
        raise SwinsegError(f"{weights.path}: invalid model card in the metadata ({err})") from err


def _merge_card(card: ModelCard | None, config: SwinUnetConfig, path: Path) -> ModelCard:
    """`card` with the network of the weights; its class names must match the number of output classes."""
    if card is None:
        return ModelCard(
            name=path.stem, network=config, classes=tuple(f"class_{i}" for i in range(config.num_classes)),
            description=f"imported from {path.name}", source=path,
        )
    if len(card.classes) != config.num_classes:
        raise SwinsegError(
            f"{path}: the weights have {config.num_classes} output classes but card {card.name!r} names "
            f"{len(card.classes)}; use a card with matching class names (or `swinseg weights convert --classes`)"
        )
    return dataclasses.replace(card, network=config)


def _load_strict(model: nn.Module, weights: WeightFile) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights.state))
    unexpected = sorted(set(weights.state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(weights.state) if expected[k].shape != weights.state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{name} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise SwinsegError(f"{weights.path}: weights do not match the network; " + "; ".join(parts))
    model.load_state_dict(weights.state, strict=True)


def load_model(path: str | Path, card: ModelCard | str | None = None) -> SwinUnet:
    """Public API: an eval-mode SwinUnet from any supported weight file (plus a card for foreign files)."""
    return load_checkpoint(path, card)[0]


def save_checkpoint(
    path: str | Path, model: SwinUnet, card: ModelCard, metadata: dict[str, Any] | None = None
) -> None:
    """Write swinseg's safetensors format (atomically): the weights plus card and version in the metadata."""
    from safetensors.torch import save_file

    from swinseg.io import atomic_output

    card = dataclasses.replace(card, network=model.config)
    info = {"format": FORMAT_NAME, "swinseg_version": __version__, "card": json.dumps(card.to_dict())}
    for key, value in (metadata or {}).items():
        info[str(key)] = value if isinstance(value, str) else json.dumps(value)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_output(Path(path)) as tmp:
        save_file(tensors, str(tmp), metadata=info)


# ------------------------------------------------------------------------------------------- describe

LAYOUT_NAMES = {
    FORMAT_NAME: "swinseg checkpoint (safetensors with model card)",
    "swinseg-state": "Swin-Unet state dict in swinseg layout (needs a model card)",
    "reference-unet": "reference Swin-Unet checkpoint",
    "swin-official": "Swin Transformer classifier, official layout (ImageNet initialisation)",
    "swin-timm": "Swin Transformer classifier, timm layout (ImageNet initialisation)",
}


def describe(path: str | Path) -> dict[str, Any]:
    """What a weight file is: layout, parameter count and the configuration it implies (for `weights info`)."""
    weights = read_weights(path)
    info: dict[str, Any] = {
        "file": str(weights.path),
        "format": LAYOUT_NAMES[weights.layout],
        "key prefix": weights.prefix or "(none)",
        "tensors": len(weights.state),
        "parameters": weights.parameter_count,
    }
    if weights.layout == FORMAT_NAME:
        card = card_of(weights)
        info["swinseg version"] = weights.metadata.get("swinseg_version", "?")
        info["card"] = card.name
        info.update(card.network.to_dict())
        info["classes"] = ", ".join(card.classes)
        info["preprocessing"] = ", ".join(f"{k}={v}" for k, v in card.preprocessing.to_dict().items() if v is not None)
        extra = {k: v for k, v in weights.metadata.items() if k not in ("format", "swinseg_version", "card")}
        info.update(extra)
        return info
    values = infer_encoder(weights)
    values.setdefault("img_size", "not stored (taken from the model card)")
    if weights.is_classifier:
        info.update(values)
        if "head.fc.weight" in weights.state:
            info["classifier classes"] = weights.state["head.fc.weight"].shape[0]
        return info
    info.update(values)
    info["num_classes"] = weights.state["output.weight"].shape[0] if "output.weight" in weights.state else "?"
    n = len(values["depths"])
    info["skip_scales"] = sorted(
        PATCH_SIZE * 2 ** (n - 1 - i) for i in range(1, n) if f"concat_back_dim.{i}.weight" in weights.state
    )
    return info
