#!/usr/bin/env bash
# The sparse-attention bench of issue 6: shapes-flux, t2i, 28 steps, 256x256 (attention is half the
# transformer's FLOPs there), the default prompt set, one bench run. First profiles the model at that
# size on its calibration prompts (docs/results/sparse_attention_profile.*, the per-head attention densities
# that `profile=` shares the density budget by), then benches uniform and profiled densities.
# Writes docs/results/sparse_attention.{json,png}.
# Usage: bash benchmarks/sparse_attention_sweep.sh [--runs 1]
set -euo pipefail
export HF_HUB_OFFLINE=1
profile=docs/results/sparse_attention_profile.json
ditaccel calibrate --model shapes-flux --prompts 8 --steps 28 --height 256 --width 256 --out "$profile"
s="refresh=3,final_steps=1,keep_text=false,dense_steps=1,dense_layers=0,min_similarity=-1"
best="sparse-attention:density=0.15,block=32,$s,profile=$profile"
ditaccel bench --model shapes-flux --task t2i --steps 28 --height 256 --width 256 \
  --methods "sparse-attention:density=0.15,block=32,$s" \
  --methods "$best" \
  --methods "sparse-attention:density=0.14,block=16,$s,profile=$profile" \
  --methods "sparse-attention:density=0.12,block=16,$s,profile=$profile" \
  --methods deepcache:interval=3 \
  --methods "deepcache:interval=3+$best" \
  "$@" --json docs/results/sparse_attention.json --plot docs/results/sparse_attention.png
