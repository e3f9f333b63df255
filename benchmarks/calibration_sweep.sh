#!/usr/bin/env bash
# The calibration sweep of issue 5: calibrated-cache (the shipped shapes-flux profile, planned for
# several FLOPs targets) against deepcache and adaptive-cache on shapes-flux, t2i, 28 steps, 128x128,
# the default (bench) prompts, which the profile was not made on, in one bench run.
# Writes docs/calibration/sweep.{json,png}.
# Usage: OMP_WAIT_POLICY=PASSIVE bash benchmarks/calibration_sweep.sh [--runs 3]
set -euo pipefail
export HF_HUB_OFFLINE=1
specs=(
  deepcache:interval=2 deepcache:interval=3 deepcache:interval=4 deepcache:interval=2,front=0
  adaptive-cache:threshold=0.1,order=1 adaptive-cache:threshold=0.2,order=1
  adaptive-cache:threshold=0.3,order=1 adaptive-cache:threshold=0.5,order=1
  adaptive-cache:threshold=0.2 adaptive-cache:threshold=0.3
  calibrated-cache:flops_ratio=0.7 calibrated-cache:flops_ratio=0.6 calibrated-cache:flops_ratio=0.5
  calibrated-cache:flops_ratio=0.45 calibrated-cache:flops_ratio=0.4 calibrated-cache:flops_ratio=0.35
  calibrated-cache:flops_ratio=0.5,order=0 calibrated-cache:flops_ratio=0.4,order=0
  calibrated-cache:flops_ratio=0.5,weighting=dt
)
args=()
for spec in "${specs[@]}"; do args+=(--methods "$spec"); done
ditaccel bench --model shapes-flux --task t2i --steps 28 "${args[@]}" "$@" \
  --json docs/calibration/sweep.json --plot docs/calibration/sweep.png
