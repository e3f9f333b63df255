#!/usr/bin/env bash
# The sparse-attention bench of issue 6: shapes-flux, t2i, 28 steps, 256x256 (attention is half the
# transformer's FLOPs there), the default prompt set, one bench run. Writes docs/sparse_attention.{json,png}.
# Usage: OMP_WAIT_POLICY=PASSIVE bash benchmarks/sparse_attention_sweep.sh [--runs 1]
set -euo pipefail
export HF_HUB_OFFLINE=1
s="dense_steps=1,dense_layers=0,min_similarity=-1"
best="sparse-attention:density=0.15,refresh=3,final_steps=1,block=32,keep_text=false,$s"
ditaccel bench --model shapes-flux --task t2i --steps 28 --height 256 --width 256 \
  --methods "sparse-attention:density=0.1,refresh=3,block=16,keep_text=false,$s" \
  --methods "sparse-attention:density=0.1,refresh=3,block=32,$s" \
  --methods "$best" \
  --methods deepcache:interval=3 \
  --methods "deepcache:interval=3+$best" \
  "$@" --json docs/sparse_attention.json --plot docs/sparse_attention.png
