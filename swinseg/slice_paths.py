"""The in-plane paths of a prediction: a batch of normalised slices in, labels (and scores) at the slice size out.

`in_plane_path` picks one per Predictor, once:

- tiled (the card has a target `spacing`): each slice resampled to that spacing, padded with the background
  (0 after normalisation: air for CT, the volume minimum for MR) where smaller than a tile, covered by img_size
  tiles overlapping by `tile_overlap`, tiles of several slices batched together, network outputs accumulated
  with Gaussian importance weights, resampled back to the slice (bilinear) and argmax there;
- whole-slice (spacing null, the published layout): each slice resized to img_size (scipy-exact cubic, as in
  training), scores resized back (bilinear) and argmax there;
- reference (`--protocol reference`, the published evaluation path): cubic resize in, softmax + argmax at the
  model size, nearest resize of the labels back (scipy.ndimage.zoom order 0); labels only.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from swinseg.config import ModelCard
from swinseg.errors import SwinsegError
from swinseg.predict_options import PredictOptions
from swinseg.preprocess import (
    gaussian_importance,
    grid_size,
    pad_margins,
    resample_images,
    resize_slices,
    tile_corners,
)

Scorer = Callable[[torch.Tensor], torch.Tensor]  # network inputs (N, C, S, S) -> scores (N, classes, S, S)
Spacing = tuple[float, float] | None  # in-plane pixel spacing (rows, columns) in mm, None where unknown


class WholeSlicePath:
    """Each slice resized whole to img_size, scores resized back. `score` gives logits, or probabilities where
    `softmaxed` (TTA averages them)."""

    def __init__(self, score: Scorer, img_size: int, batch_size: int, softmaxed: bool) -> None:
        self.score, self.img_size, self.batch_size, self.softmaxed = score, img_size, batch_size, softmaxed

    @property
    def description(self) -> str:
        """The path in a few words, for the terminal."""
        return "whole slices resized"

    def tiles_per_slice(self, size: tuple[int, int], spacing: Spacing) -> int:
        """Network inputs per slice of `size` at `spacing`."""
        return 1

    def slices_per_batch(self, size: tuple[int, int], spacing: Spacing) -> int:
        """Slices handled together: enough that their network inputs fill a forward pass."""
        return max(1, self.batch_size // self.tiles_per_slice(size, spacing))

    def predict(self, batch: torch.Tensor, spacing: Spacing,
                probabilities: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Labels (B, H, W) and, if asked, softmax probabilities (B, C, H, W) of slices (B, [2k+1,] H, W)."""
        scores = self.scores(batch, spacing)
        probs = (scores if self.softmaxed else torch.softmax(scores, dim=1)) if probabilities else None
        return scores.argmax(dim=1), probs

    def scores(self, batch: torch.Tensor, spacing: Spacing) -> torch.Tensor:
        """(B, C, H, W) scores at the slice size."""
        size = tuple(batch.shape[-2:])
        scores = self.score(with_channels(resize_slices(batch, self.img_size, order=3)))
        # Channels-last makes the class axis contiguous: the resize and the argmax over classes run ~4x faster.
        scores = scores.contiguous(memory_format=torch.channels_last)
        if tuple(scores.shape[-2:]) == size:
            return scores
        # Linear resize back, as scipy's order-1 zoom (align_corners) but as torch's sparse kernel: no matmuls.
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=True)


class TiledPath(WholeSlicePath):
    """Slices resampled to the card's target spacing, padded to at least one tile, tiled, weighted accumulation,
    resampled back."""

    def __init__(self, score: Scorer, img_size: int, batch_size: int, softmaxed: bool, card: ModelCard,
                 overlap: float) -> None:
        super().__init__(score, img_size, batch_size, softmaxed)
        self.card, self.overlap = card, overlap
        self._tilings: dict[tuple[int, int, str], tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]] = {}

    @property
    def description(self) -> str:
        return (f"slices resampled to {mm(self.card.preprocessing.spacing)} mm, {self.img_size}px tiles overlapping "
                f"{self.overlap:g}")

    def tiles_per_slice(self, size: tuple[int, int], spacing: Spacing) -> int:
        height, width = (max(n, self.img_size) for n in self.grid(size, spacing))
        return len(tile_corners(height, width, self.img_size, self.overlap))

    def grid(self, size: tuple[int, int], spacing: Spacing) -> tuple[int, int]:
        """Rows and columns of a slice of `size` at `spacing` resampled to the target spacing."""
        target = self.card.preprocessing.spacing
        assert target is not None
        if spacing is None:
            raise SwinsegError(
                f"model {self.card.name!r} resamples slices to {mm(target)} mm, but this input carries no physical "
                "pixel spacing (a PNG/JPEG/TIFF image, or a Synapse h5 file without a spacing attribute); give it "
                "as NIfTI/NRRD with its spacing"
            )
        return grid_size(size, spacing, target)

    def scores(self, batch: torch.Tensor, spacing: Spacing) -> torch.Tensor:
        size, tile = tuple(batch.shape[-2:]), self.img_size
        grid = self.grid(size, spacing)  # type: ignore[arg-type]
        images = resample_images(with_channels(batch), grid)
        (top, bottom), (left, right) = pad_margins(grid[0], tile), pad_margins(grid[1], tile)
        if top or bottom or left or right:
            images = F.pad(images, (left, right, top, bottom), value=0.0)  # 0 = air (CT) / minimum (MR)
        height, width = images.shape[-2:]
        corners, weight, coverage = self._tiling(height, width, images.device)
        total = torch.zeros((images.shape[0], len(self.card.classes), height, width), device=images.device)
        inputs = [(b, y, x) for b in range(images.shape[0]) for y, x in corners]
        for first in range(0, len(inputs), self.batch_size):
            part = inputs[first:first + self.batch_size]
            tiles = torch.stack([images[b, :, y:y + tile, x:x + tile] for b, y, x in part])
            scores = self.score(tiles) * weight
            for (b, y, x), score in zip(part, scores):
                total[b, :, y:y + tile, x:x + tile] += score
        total /= coverage
        total = total[:, :, top:height - bottom, left:width - right]
        return resample_images(total.contiguous(memory_format=torch.channels_last), size)


    def _tiling(self, height: int, width: int,
                device: torch.device) -> tuple[list[tuple[int, int]], torch.Tensor, torch.Tensor]:
        """Tile corners, the Gaussian weight of a tile and the summed weights over a padded slice of `height` x
        `width`, worked out once per slice size (every batch of a scan has the same; the last few sizes kept)."""
        key = (height, width, str(device))
        if key not in self._tilings:
            if len(self._tilings) >= 4:  # a node predicting scans of many sizes: bounded memory
                del self._tilings[next(iter(self._tilings))]
            tile = self.img_size
            corners = tile_corners(height, width, tile, self.overlap)
            weight = torch.tensor(gaussian_importance(tile), device=device)
            coverage = torch.zeros((height, width), device=device)
            for y, x in corners:
                coverage[y:y + tile, x:x + tile] += weight
            self._tilings[key] = corners, weight, coverage
        return self._tilings[key]


class ReferencePath(WholeSlicePath):
    """The published evaluation path for one slice: cubic in, softmax + argmax, nearest back; labels only."""

    def predict(self, batch: torch.Tensor, spacing: Spacing,
                probabilities: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        height, width = batch.shape[-2:]
        logits = self.score(with_channels(resize_slices(batch, self.img_size, order=3)))
        labels = torch.softmax(logits, dim=1).argmax(dim=1)
        return resize_slices(labels, (height, width), order=0), None


def in_plane_path(card: ModelCard, options: PredictOptions, score: Scorer, img_size: int,
                  batch_size: int) -> WholeSlicePath:
    """The path slices of `card`'s model take under `options`: reference (the protocol), tiled (the card has a
    target spacing) or whole-slice."""
    if options.reference and card.preprocessing.resamples:
        raise SwinsegError(
            f"--protocol reference is the published whole-slice resize, but model {card.name!r} was trained on "
            f"slices resampled to {mm(card.preprocessing.spacing)} mm; drop --protocol reference"
        )
    if options.reference:
        return ReferencePath(score, img_size, batch_size, softmaxed=False)
    if card.preprocessing.resamples:
        return TiledPath(score, img_size, batch_size, options.tta, card, options.tile_overlap)
    return WholeSlicePath(score, img_size, batch_size, options.tta)


def with_channels(batch: torch.Tensor) -> torch.Tensor:
    """Network inputs (B, C, H, W) from slices (B, H, W) (one channel) or slice stacks (B, 2k+1, H, W)."""
    return batch.unsqueeze(1) if batch.ndim == 3 else batch


def mm(spacing: tuple[float, ...] | None) -> str:
    """A spacing as text, e.g. 1.5x1.5."""
    return "x".join(f"{s:g}" for s in spacing or ())
