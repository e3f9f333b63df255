#!/usr/bin/env bash
# Caches v2 (issue 20): calibrated-cache and adaptive-cache against every peer swept over its
# threshold, on shapes-flux t2i, 128x128, one bench run per setting (same prompts, seeds, FLOPs count):
#   28 steps on the default prompts, 28 steps on 16 scenes neither the bench nor the calibration saw
#   (--offset 24: calibrate profiles scenes 8-15 and verifies its plans on 16-23), and 14 and 50 steps
#   with the 28-step profile.
# peer-magcache gates on the magnitude ratios `ditaccel calibrate` measured on shapes-flux (the
# shipped profile); peer-dbcache is cache-dit's DBCache F1B0 + TaylorSeer (pip install "ditaccel[peers]").
# Writes docs/results/caches_v2/{t2i28,heldout28,t2i14,t2i50}.{json,png} (and *_dbcache.json: cache-dit
# runs in its own bench process); benchmarks/caches_v2_report.py compares the fronts at matched cost.
# Usage: bash benchmarks/caches_v2.sh [--runs 3] [which ...]
set -euo pipefail
export HF_HUB_OFFLINE=1
mkdir -p docs/results/caches_v2
runs=(--runs 1)
if [[ "${1:-}" == "--runs" ]]; then runs=(--runs "$2"); shift 2; fi
which=("${@:-t2i28 heldout28 t2i14 t2i50}")
specs_for() {  # $1: steps
  local steps=$1
  local s=()
  for r in 0.7 0.6 0.5 0.45 0.4 0.35 0.3; do s+=("calibrated-cache:flops_ratio=$r"); done
  for t in 0.03 0.05 0.07 0.1 0.15 0.2 0.3; do s+=("adaptive-cache:threshold=$t"); done
  for t in 0.02 0.04 0.06 0.1 0.15 0.25; do s+=("peer-magcache:threshold=$t,num_inference_steps=$steps"); done
  for t in 0.1 0.2 0.3 0.4 0.6; do s+=("peer-fbcache:threshold=$t"); done
  for i in 2 3 4 5; do s+=("peer-taylorseer:cache_interval=$i,factors_dtype=float32"); done
  printf '%s\n' "${s[@]}"
}
dbcache_specs() {
  for t in 0.1 0.2 0.3 0.4 0.6; do echo "peer-dbcache:Fn=1,Bn=0,threshold=$t,warmup=4,taylorseer=1"; done
}
for name in ${which[*]}; do
  case $name in
    t2i28) steps=28; extra=() ;;
    heldout28) steps=28; extra=(--offset 24 --prompts 16) ;;
    t2i14) steps=14; extra=() ;;
    t2i50) steps=50; extra=() ;;
    *) echo "unknown run $name" >&2; exit 2 ;;
  esac
  args=()
  while IFS= read -r spec; do args+=(--methods "$spec"); done < <(specs_for "$steps")
  ditaccel bench --model shapes-flux --task t2i --steps "$steps" "${extra[@]}" "${runs[@]}" "${args[@]}" \
    --json "docs/results/caches_v2/$name.json" --plot "docs/results/caches_v2/$name.png"
  # cache-dit in a process of its own: after its enable / disable_cache, diffusers' FBCache on the
  # same transformer fails (head-block state missing), so it cannot share a bench run with the peers
  if python -c "import cache_dit" 2>/dev/null; then
    args=()
    while IFS= read -r spec; do args+=(--methods "$spec"); done < <(dbcache_specs)
    ditaccel bench --model shapes-flux --task t2i --steps "$steps" "${extra[@]}" "${runs[@]}" "${args[@]}" \
      --json "docs/results/caches_v2/${name}_dbcache.json"
  fi
done
