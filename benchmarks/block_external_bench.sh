#!/usr/bin/env bash
# The block-external bench: shapes-flux, 28 steps, 128x128, one bench run each.
# Edit (FluxKontextPipeline, the 8 default edit cases): the reference served from the cache in
# both modes and at several refresh intervals, reference + text, and the combination with
# region-edit against region-edit alone. Text-to-image (FluxPipeline, the 8 default prompts):
# external=text. Then the per-layer error of the served attention and its drift (measure=true).
# Writes docs/results/block_external_{edit,t2i}.{json,png} and docs/results/block_external_error.{json,png}.
# Usage (no other job on the machine while it times): bash benchmarks/block_external_bench.sh [--runs 3]
set -euo pipefail
export HF_HUB_OFFLINE=1
ditaccel bench --model shapes-flux --task edit --steps 28 --height 128 --width 128 \
  --methods block-external:refresh=4 \
  --methods block-external:refresh=4,mode=kv \
  --methods block-external:refresh=8,warmup=1,mode=kv \
  --methods block-external:refresh=12,warmup=1,final=0,mode=kv \
  --methods block-external:refresh=12,warmup=1,final=0 \
  --methods block-external:external=reference+text,refresh=4 \
  --methods region-edit:source=estimate,final=1,max_reuse=5 \
  --methods "region-edit:source=estimate,final=1,max_reuse=5+block-external:refresh=12,warmup=1,final=0,mode=kv" \
  --methods "region-edit:source=estimate,final=1,max_reuse=5+block-external:refresh=12,warmup=1,final=0" \
  "$@" --json docs/results/block_external_edit.json --plot docs/results/block_external_edit.png
ditaccel bench --model shapes-flux --task t2i --steps 28 --height 128 --width 128 \
  --methods block-external:external=text,refresh=4 \
  --methods block-external:external=text,refresh=4,mode=kv \
  --methods block-external:external=text,refresh=8,warmup=1,mode=kv \
  "$@" --json docs/results/block_external_t2i.json --plot docs/results/block_external_t2i.png
python benchmarks/block_external_error.py --methods block-external:refresh=4 block-external:refresh=4,mode=kv \
  --json docs/results/block_external_error.json --plot docs/results/block_external_error.png
