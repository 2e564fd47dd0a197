"""Default values that the library, the option objects (TrainConfig, Predictor) and the CLI's help texts share.

Each is defined here once; nothing else writes the number.
"""
from __future__ import annotations

SEED = 1234  # initialisation, shuffling, augmentation, train/validation/test splits and folds
FOREGROUND_OVERSAMPLING = 1 / 3  # nnU-Net's share of training crops centred on a foreground voxel
TILE_OVERLAP = 0.5  # share of a predict tile that its neighbours overlap (cards with a target spacing)
