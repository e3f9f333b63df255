#!/usr/bin/env bash
# The context-prune bench: shapes-flux instruction edits (FluxKontextPipeline, the 8 default cases),
# 28 steps, 128x128, one bench run: context-prune over keep, refresh, pivotal, merge and reuse, beside region-edit and
# block-external, with the shipped edit profile (ditaccel/models/shapes-flux/ditaccel_profile_edit.json,
# made by `ditaccel calibrate --model shapes-flux --task edit`). Then the stability of the kept set
# across steps and prompts. Writes docs/results/context_prune_edit.{json,png} and docs/results/context_prune_kept.{json,png}.
# Usage (no other job on the machine while it times): bash benchmarks/context_prune_bench.sh [--runs 3]
# Time it with OpenMP's default wait policy: under OMP_WAIT_POLICY=PASSIVE (for beside a training
# run) each of the tiny model's small ops pays a thread wake-up, which on 2 cores roughly doubles the
# forward and flattens the speed-up of any method that shortens the sequence.
set -euo pipefail
export HF_HUB_OFFLINE=1
ditaccel bench --model shapes-flux --task edit --steps 28 --height 128 --width 128 \
  --methods context-prune:keep=0.5 \
  --methods context-prune:keep=0.25 \
  --methods context-prune:keep=0.5,merge=true \
  --methods context-prune:keep=0.5,pivotal=2 \
  --methods context-prune:keep=0.25,pivotal=2 \
  --methods context-prune:keep=0.1,pivotal=2 \
  --methods context-prune:keep=0.05,pivotal=2 \
  --methods context-prune:keep=0.1,pivotal=2,refresh=8 \
  --methods context-prune:keep=0.1,pivotal=2,probe=16 \
  --methods context-prune:keep=0.05,pivotal=2,merge=true \
  --methods context-prune:keep=0.25,pivotal=2,reuse=true \
  --methods context-prune:keep=0.1,pivotal=2,reuse=true \
  --methods context-prune:keep=0.1,pivotal=2,reuse=true,refresh=8 \
  --methods context-prune:keep=0.05,pivotal=2,reuse=true \
  --methods region-edit:source=estimate,final=1,max_reuse=5 \
  --methods region-edit:source=estimate,final=1,max_reuse=3 \
  --methods block-external:refresh=12,warmup=1,final=0,mode=kv \
  --methods block-external:refresh=4,mode=kv \
  --methods "region-edit:source=estimate,final=1,max_reuse=5+context-prune:keep=0.1,pivotal=2" \
  --methods "region-edit:source=estimate,final=1,max_reuse=5+context-prune:keep=0.1,pivotal=2,reuse=true" \
  "$@" --json docs/results/context_prune_edit.json --plot docs/results/context_prune_edit.png
python benchmarks/context_prune_kept.py --methods context-prune:keep=0.1,pivotal=2 \
  --json docs/results/context_prune_kept.json --plot docs/results/context_prune_kept.png
