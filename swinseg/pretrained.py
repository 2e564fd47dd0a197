"""ImageNet initialisation of a Swin-Unet from Swin-T classifier weights (official or timm layout): the encoder
stage by stage and the decoder mirrored from it, as the published recipe does (SWIN_UNET.md); and the
classifier itself, to check a weight file against its own logits."""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from swinseg.errors import SwinsegError
from swinseg.model import PATCH_SIZE, SwinUnet
from swinseg.weights import WeightFile, _load_strict, _stage_depths, infer_encoder, read_weights


@dataclass
class InitReport:
    """What `init_from_imagenet` loaded, adapted, and left at random initialisation."""

    source: Path
    layout: str
    loaded: list[str]
    interpolated: list[str]
    adapted: list[str]
    dropped: list[str]  # in the file and in the model but with another shape
    random: list[str]  # model parameters not initialised from the file
    loaded_values: int
    total_values: int

    @property
    def fraction(self) -> float:
        return self.loaded_values / max(self.total_values, 1)

    def summary(self) -> str:
        lines = [
            f"ImageNet init from {self.source.name} ({self.layout}): {len(self.loaded)} tensors loaded, "
            f"{self.fraction:.1%} of parameter values",
        ]
        if self.interpolated:
            lines.append(f"  relative-position tables interpolated to the new window: {len(self.interpolated)}")
        if self.adapted:
            lines.append(f"  adapted: {', '.join(self.adapted)}")
        if self.dropped:
            lines.append(f"  dropped (shape mismatch): {', '.join(self.dropped)}")
        lines.append(f"  random init ({len(self.random)}): {', '.join(_group_names(self.random))}")
        return "\n".join(lines)


def _group_names(names: list[str]) -> list[str]:
    """Shorten a parameter list to its modules, e.g. ``up.expand.weight`` -> ``up.expand``."""
    return list(dict.fromkeys(name.rsplit(".", 1)[0] for name in names))


def imagenet_targets(weights: WeightFile) -> dict[str, torch.Tensor]:
    """Classifier tensors under their SwinUnet names: the encoder as is, and every encoder stage's blocks
    mirrored onto the decoder stage of the same resolution (``layers.i`` -> ``layers_up.(n-1-i)``)."""
    n = len(_stage_depths(weights.state))
    targets: dict[str, torch.Tensor] = {}
    for key, value in weights.state.items():
        if key.startswith("head."):
            continue
        targets[key] = value
        match = re.match(r"^layers\.(\d+)\.(blocks\..*)$", key)
        if match:
            targets[f"layers_up.{n - 1 - int(match.group(1))}.{match.group(2)}"] = value
    return targets


def spread_rgb_kernel(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """An RGB patch-embedding kernel (out, 3, p, p) for `channels` inputs: each gets 1/channels of the RGB sum,
    so a stack of identical slices gives what the ImageNet network gives for that grey slice (a 1-channel
    network: the sum; 2.5-D context: the neighbours share it)."""
    return (kernel.sum(dim=1, keepdim=True) / channels).repeat(1, channels, 1, 1)


def init_from_imagenet(model: SwinUnet, path: str | Path) -> InitReport:
    """Initialise encoder and decoder from a Swin classifier file (official or timm layout) as the
    reference does; relative-position tables are interpolated when the window differs (the reference drops
    them), a 3-channel patch embedding is summed for a 1-channel model, other shape mismatches are dropped."""
    weights = read_weights(path)
    if not weights.is_classifier:
        raise SwinsegError(f"{weights.path}: not a Swin classifier checkpoint (layout {weights.layout})")
    from timm.layers import resize_rel_pos_bias_table

    params = dict(model.named_parameters())
    current = model.state_dict()
    new_state: dict[str, torch.Tensor] = {}
    interpolated, adapted, dropped = [], [], []
    for key, value in imagenet_targets(weights).items():
        if key not in current:
            continue
        target = current[key]
        is_table = key.endswith("relative_position_bias_table")
        if value.shape != target.shape and is_table and value.shape[1] == target.shape[1]:
            window = model.get_submodule(key.rsplit(".", 1)[0]).window_size
            with warnings.catch_warnings():  # timm's interpolation warns about its own indexing style
                warnings.simplefilter("ignore", UserWarning)
                value = resize_rel_pos_bias_table(value, new_window_size=window, new_bias_shape=tuple(target.shape))
            interpolated.append(key)
        elif key == "patch_embed.proj.weight" and value.shape[1] == 3 and target.shape[1] != 3:
            value = spread_rgb_kernel(value, target.shape[1])
            adapted.append(f"{key} (3 -> {target.shape[1]} input channels, the RGB kernel's sum spread evenly)")
        if value.shape != target.shape:
            dropped.append(key)
            continue
        new_state[key] = value.to(target.dtype)
    model.load_state_dict(new_state, strict=False)
    loaded = sorted(new_state)
    return InitReport(
        source=weights.path, layout=weights.layout, loaded=loaded, interpolated=interpolated, adapted=adapted,
        dropped=dropped, random=sorted(set(params) - set(new_state)),
        loaded_values=sum(params[k].numel() for k in loaded if k in params),
        total_values=sum(p.numel() for p in params.values()),
    )


def load_swin_classifier(path: str | Path) -> nn.Module:
    """The Swin Transformer classifier of a classifier file (timm's SwinTransformer, eval mode), read
    through the same conversion as `init_from_imagenet`; used to verify that conversion."""
    from timm.models.swin_transformer import SwinTransformer

    weights = read_weights(path)
    if not weights.is_classifier or "head.fc.weight" not in weights.state:
        raise SwinsegError(f"{weights.path}: not a Swin classifier with a classification head")
    values = infer_encoder(weights)
    model = SwinTransformer(
        img_size=values.get("img_size", 224), patch_size=PATCH_SIZE, in_chans=values["in_chans"],
        num_classes=weights.state["head.fc.weight"].shape[0], embed_dim=values["embed_dim"],
        depths=values["depths"], num_heads=values["num_heads"], window_size=values["window_size"],
        mlp_ratio=values["mlp_ratio"], drop_path_rate=0.0,
    )
    _load_strict(model, weights)
    return model.eval()
