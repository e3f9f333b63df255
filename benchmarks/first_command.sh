#!/usr/bin/env bash
# The README's first command (its generate part), as a newcomer runs it: plain vs calibrated-cache
# on shapes-flux, side by side. Writes docs/results/first_command.{txt,png}.
# Usage (no other job on the machine): bash benchmarks/first_command.sh
set -euo pipefail
export HF_HUB_OFFLINE=1
ditaccel generate --model shapes-flux \
  --prompt "a large red circle on the left and a small blue square on the right, striped background" \
  --methods calibrated-cache:flops_ratio=0.4 --compare --runs 3 --out docs/results/first_command.png \
  | tee docs/results/first_command.txt
