#!/usr/bin/env bash
# The caching sweep of the README and of issue 4: deepcache, adaptive-cache and diffusers' own caches
# on shapes-flux, t2i, 28 steps, 128x128, the default prompt set, in one bench run (same prompts,
# seeds and interleaved timing for every method). Writes docs/results/caching_sweep.{json,png}.
# Usage: bash benchmarks/caching_sweep.sh [--runs 3]
set -euo pipefail
export HF_HUB_OFFLINE=1
specs=(
  deepcache:interval=2 deepcache:interval=3 deepcache:interval=4 deepcache:interval=5
  deepcache:interval=3,front=2 deepcache:interval=3,back=1 deepcache:interval=2,front=0
  deepcache:interval=4,schedule=nonuniform
  adaptive-cache:threshold=0.05 adaptive-cache:threshold=0.1 adaptive-cache:threshold=0.2
  adaptive-cache:threshold=0.1,order=0 adaptive-cache:threshold=0.2,order=0
  adaptive-cache:decide=probe,threshold=0.1 adaptive-cache:decide=probe,threshold=0.2
  adaptive-cache:decide=probe,threshold=0.2,order=0,ramp=0,final=1
  peer-fbcache:threshold=0.05 peer-fbcache:threshold=0.1 peer-fbcache:threshold=0.2
  peer-fbcache:threshold=0.3 peer-fbcache:threshold=0.4
  peer-taylorseer:cache_interval=3,factors_dtype=float32 peer-magcache peer-magcache:threshold=0.12
  calibrated-cache:flops_ratio=0.5 calibrated-cache:flops_ratio=0.4
)
args=()
for spec in "${specs[@]}"; do args+=(--methods "$spec"); done
ditaccel bench --model shapes-flux --task t2i --steps 28 "${args[@]}" "$@" \
  --json docs/results/caching_sweep.json --plot docs/results/caching_sweep.png
