#!/usr/bin/env bash
# Multi-GPU training and multi-node inference with torchrun.
set -euo pipefail
: "${DATA:?set DATA to a dataset folder (Synapse or nnU-Net layout)}"
: "${SCANS:?set SCANS to a folder of scans to segment}"
NPROC=${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}   # processes per machine: one per GPU
NPROC=$(( NPROC > 0 ? NPROC : 1 ))
RUN=${RUN:-runs/ddp}
MODEL=${MODEL:-swin_unet_tiny}

# Training: DistributedDataParallel (nccl on GPUs, gloo on CPU); --batch-size is the global batch, split over
# the processes; only rank 0 writes. Several machines: add --nnodes N --node-rank R --rdzv-endpoint HOST:PORT.
torchrun --nproc-per-node "$NPROC" -m swinseg train --data "$DATA" --model "$MODEL" -o "$RUN" ${TRAIN_ARGS:-}

# Inference: each rank takes every WORLD_SIZE-th case on its own GPU (cuda:LOCAL_RANK); outputs that exist are
# skipped, so a rerun after a failure only does what is missing. Same flags on every machine of a multi-node job.
torchrun --nproc-per-node "$NPROC" -m swinseg predict "$SCANS" -o "$RUN/predictions/" \
  --checkpoint "$RUN/best.safetensors" ${PREDICT_ARGS:-}
