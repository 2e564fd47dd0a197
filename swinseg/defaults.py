"""Default values that the library, the option objects (TrainConfig, Predictor) and the CLI's help texts share,
and the count of usable cores that the worker defaults follow.

Each is defined here once; nothing else writes the number.
"""
from __future__ import annotations

import os

SEED = 1234  # initialisation, shuffling, augmentation, train/validation/test splits and folds
FOREGROUND_OVERSAMPLING = 1 / 3  # nnU-Net's share of training crops centred on a foreground voxel
TILE_OVERLAP = 0.5  # share of a predict tile that its neighbours overlap (cards with a target spacing)
MR_PERCENTILES = (0.5, 99.5)  # per-volume intensity range of MR (and other non-CT) channels, clipped and scaled


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: what Slurm, taskset or a container grants), not the
    machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
