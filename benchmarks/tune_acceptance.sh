#!/usr/bin/env bash
# Issue 35's acceptance measurement of `ditaccel tune` on shapes-flux, t2i and edit, --target-speedup 2:
# 1. the tune (8 default inputs; its front, plot and grid in DIR/<task>/), timed;
# 2. the exhaustive `ditaccel bench` grid over the same candidates (every spec the tune measured on
#    its first rung, combinations included) on the same inputs and runs, timed: DIR/<task>_grid.json;
# 3. the recommended setting on 16 inputs the tune did not see (--offset 24: beyond the bench set 0-7
#    and calibrate's 8-23): DIR/<task>_holdout.json;
# 4. benchmarks/tune_acceptance.py check: within 0.5 dB of the grid's best at >= 2x, holds on the
#    held-out inputs within the tune's interval, tune time < grid time / 3: DIR/<task>_acceptance.json.
# Needs an otherwise idle machine (wall-clock timings). Defaults give the acceptance run; a toy run
# for plumbing: STEPS=4 PROMPTS=4 HOLDOUT=4 RUNS=1 DIR=/tmp/tune_toy bash benchmarks/tune_acceptance.sh
set -euo pipefail
export HF_HUB_OFFLINE=1
MODEL=${MODEL:-shapes-flux}
STEPS=${STEPS:-28}
PROMPTS=${PROMPTS:-8}
HOLDOUT=${HOLDOUT:-16}
RUNS=${RUNS:-3}
TARGET=${TARGET:-2}
ETA=${ETA:-3}  # the tune's default
TASKS=${TASKS:-t2i edit}
DIR=${DIR:-docs/results/tune}
mkdir -p "$DIR"
for task in $TASKS; do
  rm -rf "${DIR:?}/$task"  # a fresh tune: a resumed one would not be timed whole
  start=$(date +%s.%N)
  ditaccel tune --model "$MODEL" --task "$task" --steps "$STEPS" --prompts "$PROMPTS" --runs "$RUNS" \
    --target-speedup "$TARGET" --eta "$ETA" --out "$DIR/$task"
  tune_s=$(python -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$start")
  grid=()
  while IFS= read -r spec; do grid+=(--methods "$spec"); done \
    < <(python benchmarks/tune_acceptance.py candidates "$DIR/$task")
  start=$(date +%s.%N)
  ditaccel bench --model "$MODEL" --task "$task" --steps "$STEPS" --prompts "$PROMPTS" --runs "$RUNS" \
    "${grid[@]}" --json "$DIR/${task}_grid.json"
  grid_s=$(python -c "import sys; print(float(sys.argv[1]) - float(sys.argv[2]))" "$(date +%s.%N)" "$start")
  recommended=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['recommended']['method'])" "$DIR/$task/front.json")
  ditaccel bench --model "$MODEL" --task "$task" --steps "$STEPS" --offset 24 --prompts "$HOLDOUT" --runs "$RUNS" \
    --methods "$recommended" --json "$DIR/${task}_holdout.json"
  python benchmarks/tune_acceptance.py check --dir "$DIR" --task "$task" --tune-seconds "$tune_s" --grid-seconds "$grid_s"
done
