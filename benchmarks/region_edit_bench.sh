#!/usr/bin/env bash
# The region-edit bench of issue 7: shapes-flux, edit task (FluxKontextPipeline), 28 steps, 128x128,
# the 8 default edit cases, one bench run. Instruction edits (the partition from the model's own
# estimate) and mask edits with the cases' masks, at RegionE's schedule and with one final full step
# and longer velocity reuse; mask edits without the estimate's tokens and composited; the velocity
# cache off; and the best step caches of this project at a similar cost.
# Writes docs/results/region_edit.{json,png}.
# Usage: bash benchmarks/region_edit_bench.sh [--runs 3]
set -euo pipefail
export HF_HUB_OFFLINE=1
ditaccel bench --model shapes-flux --task edit --steps 28 --height 128 --width 128 \
  --methods region-edit:source=estimate \
  --methods region-edit:source=estimate,final=1,max_reuse=5 \
  --methods region-edit:source=mask \
  --methods region-edit:source=mask,final=1,max_reuse=5 \
  --methods region-edit:source=mask,estimate_outside=false \
  --methods region-edit:source=mask,composite=true \
  --methods region-edit:source=estimate,velocity_tolerance=0 \
  --methods adaptive-cache:threshold=0.1 \
  --methods calibrated-cache:flops_ratio=0.4 \
  "$@" --json docs/results/region_edit.json --plot docs/results/region_edit.png
