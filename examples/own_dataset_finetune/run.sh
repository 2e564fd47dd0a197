#!/usr/bin/env bash
# Train on your own NIfTI dataset (nnU-Net layout), then finetune the model to a new label set.
set -euo pipefail
: "${DATA:?set DATA to an nnU-Net dataset (imagesTr/, labelsTr/, dataset.json)}"
: "${NEW_DATA:?set NEW_DATA to a dataset with the new label set (nnU-Net layout)}"
RUN=${RUN:-runs/own}
MODEL=${MODEL:-swin_unet_tiny}
EPOCHS=${EPOCHS:-150}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-50}
PRETRAINED_FLAG=${PRETRAINED:+--pretrained $PRETRAINED}   # ImageNet Swin-T file, optional

# 1. Train: 20% of the cases are held out for validation; best.safetensors is the best on them.
swinseg train --data "$DATA" --model "$MODEL" $PRETRAINED_FLAG -o "$RUN/base" --epochs "$EPOCHS" ${TRAIN_ARGS:-}

# 2. Finetune to the new labels: classes with the same name keep their weights, new ones start fresh;
#    the encoder is frozen (small datasets).
swinseg finetune --checkpoint "$RUN/base/best.safetensors" --data "$NEW_DATA" -o "$RUN/finetuned" \
  --epochs "$FINETUNE_EPOCHS" --freeze-encoder ${TRAIN_ARGS:-}

# 3. Predict and evaluate the finetuned model on the new dataset's images.
swinseg predict "$NEW_DATA/imagesTr/" -o "$RUN/predictions/" --checkpoint "$RUN/finetuned/best.safetensors"
swinseg evaluate "$RUN/predictions/" "$NEW_DATA/labelsTr/" --dataset-json "$NEW_DATA/dataset.json" -o "$RUN/report"
