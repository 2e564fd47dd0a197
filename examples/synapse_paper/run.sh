#!/usr/bin/env bash
# Reproduce the Swin-Unet Synapse table (Cao et al. 2021): train with the published recipe from ImageNet
# Swin-T weights, predict the 12 test volumes with the reference protocol, evaluate with the paper's rules.
set -euo pipefail
: "${SYNAPSE:?set SYNAPSE to the Synapse folder (train_npz/, test_vol_h5/, lists_Synapse/)}"
: "${PRETRAINED:?set PRETRAINED to swin_tiny_patch4_window7_224.pth (official or timm layout)}"
RUN=${RUN:-runs/synapse_swin_unet}
MODEL=${MODEL:-swin_unet_tiny}
EPOCHS=${EPOCHS:-150}          # the paper's 150 epochs (13,950 iterations at batch 24)
BATCH=${BATCH:-24}
DEVICE=${DEVICE:-auto}

# The published recipe (the default with --pretrained): 0.4 CE + 0.6 Dice, SGD lr 0.05 at batch 24, poly decay,
# seed 1234.
# No validation during training, as in the paper: the model after the last epoch is final.safetensors.
swinseg train --data "$SYNAPSE" --model "$MODEL" --pretrained "$PRETRAINED" --recipe published -o "$RUN" \
  --epochs "$EPOCHS" --batch-size "$BATCH" --val-every 0 --device "$DEVICE" ${TRAIN_ARGS:-}

# One slice per pass, cubic resize to 224, nearest resize of the labels back: the published evaluation path.
swinseg predict "$SYNAPSE/test_vol_h5/" -o "$RUN/predictions/" --checkpoint "$RUN/final.safetensors" \
  --protocol reference --device "$DEVICE" --overwrite

# Labels 1-8, Dice and HD95 in voxel units (medpy), the paper's empty-mask rules, the paper's table layout.
swinseg evaluate "$RUN/predictions/" "$SYNAPSE/test_vol_h5/" --protocol synapse-paper -o "$RUN/report"
