"""Which steps ``adaptive-cache`` computes, per prompt: how much the choice depends on the prompt.

The evidence behind the planner's drift plans (``ditaccel/calibration/drift_schedule.py``): on
shapes-flux t2i, 28 steps, the 8 calibration prompts (the profiled ones), ``adaptive-cache`` at a
few thresholds; per prompt the computed steps (``C``) and served ones (``.``), their count, and
how many prompts share the most common pattern. Writes a JSON.

    python benchmarks/adaptive_patterns.py --json docs/results/caches_v2/adaptive_patterns.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from ditaccel import AcceleratedPipeline, models
from ditaccel.bench import case_call

THRESHOLDS = (0.03, 0.05, 0.1)
STEPS = 28
PROMPTS = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    entry = models.get("shapes-flux")
    cases = entry.calibration_cases("t2i", PROMPTS)
    rows = []
    for threshold in THRESHOLDS:
        pipe = AcceleratedPipeline.from_pretrained(
            "shapes-flux", methods=f"adaptive-cache:threshold={threshold}"
        )
        pipe.set_progress_bar_config(disable=True)
        patterns = []
        for case in cases:
            pipe(**case_call(case, pipe.adapter, steps=STEPS, height=entry.height, width=entry.width,
                             extra=dict(entry.call_defaults)))  # fmt: skip
            served = {r.step for r in pipe.stats.records if r.blocks_reused}
            patterns.append("".join("." if t in served else "C" for t in range(STEPS)))
        pattern, shared = Counter(patterns).most_common(1)[0]
        rows.append({"threshold": threshold, "patterns": patterns, "computed": [p.count("C") for p in patterns],
                     "most_common": pattern, "prompts_with_it": shared})  # fmt: skip
        print(rows[-1])
    args.json.write_text(json.dumps({"model": "shapes-flux", "steps": STEPS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
