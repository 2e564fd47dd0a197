#!/usr/bin/env bash
# Run a checkpoint trained with the reference Swin-Unet code on your own NIfTI scans.
set -euo pipefail
: "${CHECKPOINT:?set CHECKPOINT to the reference .pth (keys swin_unet.*, module.swin_unet.* or bare)}"
: "${SCANS:?set SCANS to a folder of scans (NIfTI, NRRD, MHA, DICOM series folders)}"
MODEL=${MODEL:-swin_unet_tiny}   # card for what the tensors cannot tell: image size, class names, CT window
OUT=${OUT:-masks}

swinseg weights info "$CHECKPOINT"
# One conversion makes a self-describing checkpoint: config, class names and preprocessing travel with it.
swinseg weights convert "$CHECKPOINT" --model "$MODEL" -o "$OUT/model.safetensors" --overwrite
swinseg predict "$SCANS" -o "$OUT/" --checkpoint "$OUT/model.safetensors" ${PREDICT_ARGS:-}

first_scan=$(find "$SCANS" -maxdepth 1 -name '*.nii*' | sort | head -n 1)
if [ -n "$first_scan" ]; then
  name=$(basename "$first_scan"); name=${name%.gz}; name=${name%.nii}; name=${name%_0000}  # as predict names it
  swinseg overlay "$first_scan" "$OUT/$name.nii.gz" -o "$OUT/$name.png" --model "$MODEL"
fi
