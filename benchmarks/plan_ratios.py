"""calibrated-cache's FLOPs ratio against the target at other step counts than the profile's.

For the shipped shapes-flux profile (28 steps), one call per step count and target: the FLOPs
ratio of the plan the call ran, and whether it was a verified plan. Writes a JSON.

    python benchmarks/plan_ratios.py --json docs/results/caches_v2/plan_ratios.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ditaccel import AcceleratedPipeline, models
from ditaccel.calibration.error_model import call_sigmas

STEPS = (10, 14, 20, 28, 50, 100)
TARGETS = (0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args()
    entry = models.get("shapes-flux")
    rows = []
    for target in TARGETS:
        pipe = AcceleratedPipeline.from_pretrained(
            "shapes-flux", methods=f"calibrated-cache:flops_ratio={target}"
        )
        pipe.set_progress_bar_config(disable=True)
        method = pipe.method("calibrated-cache")
        for steps in STEPS:
            row = {"steps": steps, "target": target}
            try:
                pipe(prompt="a red circle", num_inference_steps=steps, height=entry.height, width=entry.width,
                     generator=torch.Generator().manual_seed(0), output_type="latent")  # fmt: skip
            except ValueError as error:  # a target the profile cannot reach there: refused
                row["refused"] = str(error)
            else:
                plan = method.plan(steps, call_sigmas(pipe.pipeline.scheduler))  # the call's own
                row.update(flops_ratio=round(plan.flops_ratio, 4), off_by=round(abs(plan.flops_ratio - target), 4),
                           verified=bool(plan.measured), order=plan.order)  # fmt: skip
            rows.append(row)
            print(row)
    met = [r for r in rows if "off_by" in r]
    summary = {"largest_off_by": max(r["off_by"] for r in met), "refused": len(rows) - len(met)}
    args.json.write_text(json.dumps({"model": "shapes-flux", "rows": rows, **summary}, indent=1))
    print(summary)


if __name__ == "__main__":
    main()
