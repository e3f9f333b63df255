#!/usr/bin/env bash
# shapes-flux on one GPU: fine-tune the shipped weights for a fixed time (6 minutes of training,
# fits 8 minutes on one H100 with the dataset build and the evaluation), with the v3 recipe the CPU
# runs use, at a larger batch; writes the checkpoint and its held-out evaluation to OUT_DIR.
#
#   bash benchmarks/train_gpu.sh OUT_DIR [MINUTES]
#
# OUT_DIR/model/       the EMA pipeline (copy over ditaccel/models/shapes-flux/ to ship it, keeping
#                      the calibration profiles, once it beats the shipped model)
# OUT_DIR/state/       the resumable state (a second call with the same OUT_DIR continues it)
# OUT_DIR/eval.json    the held-out evaluation (16 scenes, 16 edits, 28 steps) after training
# OUT_DIR/train.log    the training log
#
# TRAIN_GPU_DRY=1: a CPU dry run of the plumbing at toy size (what the test suite runs).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: bash benchmarks/train_gpu.sh OUT_DIR [MINUTES]}
MINUTES=${2:-6}
mkdir -p "$OUT"
if [[ "${TRAIN_GPU_DRY:-0}" == 1 ]]; then
  DEVICE=cpu
  SIZE=(--set 'buckets={"t2i-128": 4, "edit-128": 4}' --set 'bucket_weights={"t2i-128": 0.6, "edit-128": 0.4}'
        --set batch=2 --set steps=4 --set eval_every=4 --set eval_cases=1 --set eval_steps=2 --set state_every=2
        --set log_every=1 --set decoder_steps=2 --set vae_pool=4 --set vae_batch=2 --set threads=1)
else
  DEVICE=cuda
  SIZE=(--set 'buckets={"t2i-128": 12000, "edit-128": 8000}' --set 'bucket_weights={"t2i-128": 0.6, "edit-128": 0.4}'
        --set batch=64 --set steps=20000 --set lr=0.0004 --set warmup=100 --set eval_every=1000000
        --set eval_cases=16 --set eval_steps=28 --set state_every=500 --set decoder_steps=300 --set log_every=20)
fi
python -m ditaccel.models.train_shapes_flux --init ditaccel/models/shapes-flux --device "$DEVICE" \
  --out "$OUT/model" --state "$OUT/state" --budget-min "$MINUTES" --eval-json "$OUT/eval.json" \
  --set curriculum=0 --set ema=0.999 --set copy_weight=3 --set parse_weight=0.1 "${SIZE[@]}" \
  2>&1 | tee "$OUT/train.log"
cat "$OUT/eval.json"
