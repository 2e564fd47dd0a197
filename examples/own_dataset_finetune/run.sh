#!/usr/bin/env bash
# Train on your own NIfTI dataset (nnU-Net layout), then finetune the model to a new label set.
set -euo pipefail
: "${DATA:?set DATA to an nnU-Net dataset (imagesTr/, labelsTr/, dataset.json)}"
: "${NEW_DATA:?set NEW_DATA to a dataset with the new label set (nnU-Net layout)}"
: "${HELDOUT:?set HELDOUT to comma-separated case names of NEW_DATA kept out of finetuning, for evaluation}"
RUN=${RUN:-runs/own}
MODEL=${MODEL:-swin_unet_tiny}
EPOCHS=${EPOCHS:-150}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-50}
PRETRAINED_FLAG=${PRETRAINED:+--pretrained $PRETRAINED}   # ImageNet Swin-T file, optional

# 1. Train: 20% of the cases are held out for validation; best.safetensors is the best on them.
swinseg train --data "$DATA" --model "$MODEL" $PRETRAINED_FLAG -o "$RUN/base" --epochs "$EPOCHS" ${TRAIN_ARGS:-}

# 2. Finetune to the new labels: classes with the same name keep their weights, new ones start fresh;
#    the encoder is frozen (small datasets). The HELDOUT cases are its validation cases, never trained on.
swinseg finetune --checkpoint "$RUN/base/best.safetensors" --data "$NEW_DATA" -o "$RUN/finetuned" \
  --epochs "$FINETUNE_EPOCHS" --freeze-encoder --val-cases "$HELDOUT" ${TRAIN_ARGS:-}

# 3. Predict and evaluate the finetuned model on the held-out cases only.
IFS=, read -ra cases <<< "$HELDOUT"
images=(); mkdir -p "$RUN/heldout_labels"
for case in "${cases[@]}"; do
  image="$NEW_DATA/imagesTr/${case}_0000.nii.gz"   # nnU-Net naming, or MSD's CASE.nii.gz
  [ -e "$image" ] || image="$NEW_DATA/imagesTr/$case.nii.gz"
  images+=("$image")
  ln -sf "$(cd "$NEW_DATA/labelsTr" && pwd)/$case.nii.gz" "$RUN/heldout_labels/$case.nii.gz"
done
swinseg predict "${images[@]}" -o "$RUN/predictions/" --checkpoint "$RUN/finetuned/best.safetensors"
swinseg evaluate "$RUN/predictions/" "$RUN/heldout_labels/" --dataset-json "$NEW_DATA/dataset.json" -o "$RUN/report"
