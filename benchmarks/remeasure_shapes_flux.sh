#!/usr/bin/env bash
# Everything the documentation measures on shapes-flux, re-made in order: what a new set of weights
# needs before it lands (issue 33: "the shipped calibration profile re-made, and the README's
# tables, figures and first-command output re-made with the benchmarks/ scripts").
#
#   bash benchmarks/remeasure_shapes_flux.sh [STAGE ...]     (default: every stage, in this order)
#
# Stages (times: 2 idle cores, the first model):
#   quality    the checker figures of the plain pipeline: default prompts, 32 held-out scenes
#              (--offset 24), default edits (shapes_acc, preserve_psnr_db); docs/results/shapes_flux_quality_*.json
#   profiles   the shipped calibration profiles, t2i (~4 min, plots into docs/results/calibration) and edit
#   samples    first_command.sh, shapes_samples.py, step_change.py (~3 min)
#   caching    caching_sweep.sh --runs 3 (the README's text-to-image table)
#   editing    region_edit_bench.sh, block_external_bench.sh, context_prune_bench.sh (the README's edit table)
#   sparse     sparse_attention_sweep.sh
#   caches_v2  caches_v2.sh and its report, plan_ratios.py, adaptive_patterns.py, calibrate_time.sh (~1 h)
#   context    context_sensitivity_proxy.py, block_time.py
#   docs       the README's tables from the results (python -m ditaccel.result_tables README.md), mkdocs build --strict
#
# Time it on an idle machine with OpenMP's default wait policy (no training run beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
stages=("${@:-quality profiles samples caching editing sparse caches_v2 context docs}")
model=ditaccel/models/shapes-flux
for stage in ${stages[@]}; do
  echo "== $stage"
  case "$stage" in
    quality)
      ditaccel bench --model shapes-flux --task t2i --steps 28 --methods none --prompts 8 --runs 1 \
        --json docs/results/shapes_flux_quality_t2i.json
      ditaccel bench --model shapes-flux --task t2i --steps 28 --methods none --prompts 32 --offset 24 --runs 1 \
        --json docs/results/shapes_flux_quality_heldout.json
      ditaccel bench --model shapes-flux --task edit --steps 28 --methods none --prompts 8 --runs 1 \
        --json docs/results/shapes_flux_quality_edit.json ;;
    profiles)
      ditaccel calibrate --model shapes-flux --prompts 8 --steps 28 --out "$model/ditaccel_profile.json" \
        --plots docs/results/calibration
      ditaccel calibrate --model shapes-flux --task edit --prompts 8 --steps 28 \
        --out "$model/ditaccel_profile_edit.json" ;;
    samples)
      bash benchmarks/first_command.sh
      python benchmarks/shapes_samples.py
      python benchmarks/step_change.py ;;
    caching) bash benchmarks/caching_sweep.sh --runs 3 ;;
    editing)
      bash benchmarks/region_edit_bench.sh --runs 3
      bash benchmarks/block_external_bench.sh --runs 3
      bash benchmarks/context_prune_bench.sh --runs 5 ;;
    sparse) bash benchmarks/sparse_attention_sweep.sh ;;
    caches_v2)
      bash benchmarks/caches_v2.sh
      python benchmarks/caches_v2_report.py > docs/results/caches_v2/report.md
      python benchmarks/plan_ratios.py --json docs/results/caches_v2/plan_ratios.json
      python benchmarks/adaptive_patterns.py --json docs/results/caches_v2/adaptive_patterns.json
      bash benchmarks/calibrate_time.sh ;;
    context)
      python benchmarks/context_sensitivity_proxy.py --json docs/results/context_sensitivity_proxy.json \
        --plot docs/results/context_sensitivity_proxy.png
      python benchmarks/block_time.py --json docs/results/block_time.json ;;
    docs)
      python -m ditaccel.result_tables README.md
      NO_MKDOCS_2_WARNING=1 mkdocs build --strict -d "$(mktemp -d)" ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
