#!/usr/bin/env bash
# How long `ditaccel calibrate` takes on shapes-flux with the plan verification (issue 20's bar: under
# 5 minutes on 2 cores): profiling 8 prompts x 28 steps, step sensitivity, verified plans at 28 and
# 14 steps. Writes the profile to a temporary folder and the command's output, with GNU time's
# wall clock and peak memory, to docs/results/caches_v2/calibrate_time.txt.
# Usage: bash benchmarks/calibrate_time.sh   (on an otherwise idle machine)
set -euo pipefail
export HF_HUB_OFFLINE=1
out=$(mktemp -d)
{ /usr/bin/time -v ditaccel calibrate --model shapes-flux --prompts 8 --steps 28 --out "$out/profile.json" 2>&1 \
    | grep -v -E "Loading|torchvision|it/s" ; } > docs/results/caches_v2/calibrate_time.txt 2>&1
grep -E "Elapsed|Maximum resident" docs/results/caches_v2/calibrate_time.txt
