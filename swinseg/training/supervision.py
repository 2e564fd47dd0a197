"""Deep supervision (nnU-Net's): during training, 1x1 heads on the intermediate decoder stages predict the labels
at their coarser resolutions too, and the loss weighs each level half as much as the next finer one. The heads
live here, beside the network: checkpoints hold the network alone, and prediction never sees them."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swinseg.model import SwinUnet


class DeepSupervision(nn.Module):
    """`network` with heads on its decoder stages between the bottleneck and the last one; `forward` gives the
    logits (B, classes, h, w) at the image size, then at 1/8, 1/16, ... of it (patch 4: half, a quarter, ... of
    the token grid)."""

    def __init__(self, network: SwinUnet) -> None:
        super().__init__()
        self.network = network
        config, stages = network.config, network.layers_up[1:-1]  # coarse to fine
        dims = [config.embed_dim * 2 ** (len(stages) - index) for index in range(len(stages))]
        self.heads = nn.ModuleList(nn.Linear(dim, config.num_classes) for dim in reversed(dims))  # fine first
        self._stage_outputs: list[torch.Tensor] | None = None
        for stage in stages:
            stage.blocks.register_forward_hook(self._keep_output)

    @property
    def config(self) -> Any:
        return self.network.config

    def _keep_output(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if self._stage_outputs is not None:  # only inside our own forward (not in validation)
            self._stage_outputs.append(output)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        self._stage_outputs = []
        try:
            logits = self.network(images)
            coarse_first = self._stage_outputs
        finally:
            self._stage_outputs = None
        # stage outputs are channels-last token grids (B, h, w, C)
        return [logits] + [head(features).permute(0, 3, 1, 2)
                           for head, features in zip(self.heads, reversed(coarse_first))]


class DeepSupervisionLoss(nn.Module):
    """`loss` of each level's logits against the labels at its size (nearest), weighted 1, 1/2, 1/4, ...
    and normalised to sum 1 (nnU-Net's weighting)."""

    def __init__(self, loss: nn.Module, levels: int) -> None:
        super().__init__()
        self.loss = loss
        weights = [0.5**level for level in range(levels)]
        self.weights = [weight / sum(weights) for weight in weights]

    def forward(self, outputs: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        total = self.weights[0] * self.loss(outputs[0], labels)
        for weight, logits in zip(self.weights[1:], outputs[1:]):
            total = total + weight * self.loss(logits, downsampled_labels(labels, logits.shape[-2:]))
        return total


def downsampled_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) integer labels at (B, *size), nearest neighbour."""
    return F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest")[:, 0].to(labels.dtype)
