#!/usr/bin/env bash
# Continue the shapes-flux v3 CPU fine-tune (issue 33) in the background: 1 thread, passive OpenMP
# waiting, nice, so the other core stays usable. Resumable: rerunning continues from STATE.
#
#   bash training/shapes-flux-v3/resume.sh [STATE]        (default STATE: training/shapes-flux-v3)
#
# STATE is a state folder (ditaccel/models/train_state.py). This folder on main holds only its EMA
# pipeline and progress.json (the optimiser's moments, the raw weights and the random streams are
# kept on the branch wip/issue-33 where it survives); without them the run cannot continue the saved
# state, so the first call starts a new state from these EMA weights in training/shapes-flux-v3-run/.
# The run needs the v3 world (caption-determined backgrounds, issue 33): it trains on what
# ditaccel.shapes renders. From step 3500 on it weighs the anchors' boxes (focus=anchors) instead of
# the target's objects; the amend lets a state saved before that continue with it.
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE=${1:-training/shapes-flux-v3}
INIT=ditaccel/models/shapes-flux
if [[ ! -f "$STATE/optimizer.pt" ]]; then  # weights only: a new state from them
  INIT="$STATE/pipeline"
  STATE=training/shapes-flux-v3-run
fi
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
exec nice -n 10 python -m ditaccel.models.train_shapes_flux --init "$INIT" \
  --out "$STATE/../shapes-flux-v3-out" --state "$STATE" --budget-min 1000 \
  --set threads=1 \
  --set 'buckets={"t2i-128": 6000, "edit-128": 4000}' --set 'bucket_weights={"t2i-128": 0.6, "edit-128": 0.4}' \
  --set steps=12000 --set lr=0.0004 --set warmup=200 --set ema=0.999 --set curriculum=0 \
  --set copy_weight=3 --set parse_weight=0.1 --set focus=anchors --set 'amend=["focus"]' \
  --set eval_every=1000 --set eval_cases=16 --set eval_steps=28 --set state_every=500 --set log_every=50
