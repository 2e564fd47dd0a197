"""The published training loss: weighted cross-entropy + soft Dice over all classes."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5,
                   background: bool = True) -> torch.Tensor:
    """Mean over classes (background included unless `background` is False, as nnU-Net's Dice) of
    1 - (2|P.T| + s) / (|P|^2 + |T|^2 + s).

    P is the softmax of `logits` (B, C, H, W), T the one-hot of `target` (B, H, W); sums run over the whole
    batch, as in the reference code. Computed in float32 whatever the autocast dtype.
    """
    probs = torch.softmax(logits.float(), dim=1)
    one_hot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3)
    intersection = (probs * one_hot).sum(dims)
    denominator = (probs * probs).sum(dims) + one_hot.sum(dims)  # one_hot**2 == one_hot
    per_class = 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)
    return per_class.mean() if background else per_class[1:].mean()


class DiceCELoss(nn.Module):
    """`ce_weight` x cross-entropy + `dice_weight` x soft Dice (published: 0.4 and 0.6, background in the Dice)."""

    def __init__(self, ce_weight: float = 0.4, dice_weight: float = 0.6, smooth: float = 1e-5,
                 dice_background: bool = True) -> None:
        super().__init__()
        self.ce_weight = ce_weight
        self.dice_weight = dice_weight
        self.smooth = smooth
        self.dice_background = dice_background

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = F.cross_entropy(logits.float(), target.long())
        dice = soft_dice_loss(logits, target, self.smooth, self.dice_background)
        return self.ce_weight * ce + self.dice_weight * dice
