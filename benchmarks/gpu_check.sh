#!/usr/bin/env bash
# The CUDA paths in one prepared run (about 6-8 minutes on one H100, the device tool's 10-minute limit):
# a short CUDA training and prediction at bf16, a 2-process torchrun with nccl (when 2 GPUs are visible;
# otherwise 2 processes on one GPU is not what nccl allows, and it says so), and the speed benchmarks with
# --device cuda. Every step prints its own timing; the summary at the end lists them.
#
#     bash benchmarks/gpu_check.sh [OUT_DIR]          # OUT_DIR default: ${OUT:-gpu_check_out}
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
PY=${PYTHON:-python3}
SUMMARY=()

if ! $PY -c "import swinseg" 2>/dev/null; then
  echo "installing swinseg (pip install -e .) ..."
  $PY -m pip install --quiet -e . >"$OUT_DIR/pip.log" 2>&1 || { echo "pip install failed: $OUT_DIR/pip.log"; exit 1; }
fi

step() {  # step NAME COMMAND...: run, time, and remember the result
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$LOG"
  local began=$SECONDS
  "$@" 2>&1 | tee -a "$LOG" | tail -n 25
  local rc=${PIPESTATUS[0]}
  SUMMARY+=("$(printf '%-34s rc=%-3s %4ss' "$name" "$rc" $((SECONDS - began)))")
}

$PY - <<'EOF' | tee -a "$LOG"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name} {p.total_memory / 2**30:.0f} GiB bf16={torch.cuda.is_bf16_supported()}")
EOF

DATA="$OUT_DIR/phantoms"
step "phantoms (16 cases)" swinseg demo-data "$DATA/train" --cases 16 --seed 0 --shape 48 128 128 \
  --spacing 5 2.75 2.75
step "phantoms held out (4)" swinseg demo-data "$DATA/heldout" --cases 4 --seed 1 --shape 48 128 128 \
  --spacing 5 2.75 2.75
step "train cuda bf16 (15 epochs)" swinseg train --data "$DATA/train" -m swin_unet_demo \
  -o "$OUT_DIR/run_cuda" --epochs 15 --batch-size 16 --val-every 5 --device cuda --precision bf16
step "predict cuda bf16" swinseg predict "$DATA/heldout/imagesTr/" -o "$OUT_DIR/pred_cuda/" \
  -c "$OUT_DIR/run_cuda/final.safetensors" --device cuda --precision bf16 --overwrite
step "evaluate" swinseg evaluate "$OUT_DIR/pred_cuda" "$DATA/heldout/labelsTr" \
  --dataset-json "$DATA/heldout/dataset.json" -o "$OUT_DIR/report_cuda"

GPUS=$($PY -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then
  step "torchrun 2 x nccl (3 epochs)" $PY -m torch.distributed.run --standalone --nproc_per_node 2 \
    "$(command -v swinseg)" train --data "$DATA/train" -m swin_unet_demo -o "$OUT_DIR/run_ddp" --epochs 3 --batch-size 16 \
    --val-every 3 --device cuda --precision bf16
else
  echo "one GPU visible: nccl needs a GPU per process, so the 2-process torchrun runs with gloo on the CPU" | tee -a "$LOG"
  step "torchrun 2 x gloo on CPU (1 epoch)" $PY -m torch.distributed.run --standalone --nproc_per_node 2 \
    "$(command -v swinseg)" train --data "$DATA/train" -m swin_unet_test -o "$OUT_DIR/run_ddp" --epochs 1 --batch-size 16 \
    --val-every 0 --device cpu
fi

step "model_speed cuda bf16" $PY benchmarks/model_speed.py --device cuda --precision bf16 --batches 1 8 32 \
  --backends torch
step "model_speed cuda fp32" $PY benchmarks/model_speed.py --device cuda --precision fp32 --batches 8 32 \
  --backends torch
step "predict_speed cuda" $PY benchmarks/predict_speed.py --device cuda --backends torch --rss-slices 0 \
  --backend-rounds 1
step "train_speed cuda bf16" $PY benchmarks/train_speed.py --device cuda --precision bf16 --batch-size 24 --steps 20

echo
echo "summary (rc 0 = passed):" | tee -a "$LOG"
printf '%s\n' "${SUMMARY[@]}" | tee -a "$LOG"
