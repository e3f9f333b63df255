#!/usr/bin/env bash
# The context-prune bench: shapes-flux instruction edits (FluxKontextPipeline, the 8 default cases),
# 28 steps, 128x128, one bench run: context-prune over keep, refresh, pivotal and merge, beside region-edit and
# block-external, with the shipped edit profile (ditaccel/models/shapes-flux/ditaccel_profile_edit.json,
# made by `ditaccel calibrate --model shapes-flux --task edit`). Then the stability of the kept set
# across steps and prompts. Writes docs/context_prune_edit.{json,png} and docs/context_prune_kept.{json,png}.
# Usage (no other job on the machine while it times): OMP_WAIT_POLICY=PASSIVE bash benchmarks/context_prune_bench.sh [--runs 3]
set -euo pipefail
export HF_HUB_OFFLINE=1
ditaccel bench --model shapes-flux --task edit --steps 28 --height 128 --width 128 \
  --methods context-prune:keep=0.5 \
  --methods context-prune:keep=0.25 \
  --methods context-prune:keep=0.1 \
  --methods context-prune:keep=0.1,refresh=8 \
  --methods context-prune:keep=0.25,probe=16 \
  --methods context-prune:keep=0.25,merge=true \
  --methods context-prune:keep=0.1,merge=true \
  --methods context-prune:keep=0.25,pivotal=2 \
  --methods region-edit:source=estimate,final=1,max_reuse=5 \
  --methods block-external:refresh=12,warmup=1,final=0,mode=kv \
  --methods "region-edit:source=estimate,final=1,max_reuse=5+context-prune:keep=0.25" \
  "$@" --json docs/context_prune_edit.json --plot docs/context_prune_edit.png
python benchmarks/context_prune_kept.py --methods context-prune:keep=0.25 \
  --json docs/context_prune_kept.json --plot docs/context_prune_kept.png
