"""Does a profile made on some prompts predict the redundancy of other prompts?

Profiles an embedded model twice, on its calibration prompts and on its (disjoint) bench prompts,
and reports the Pearson correlation of the two step x block change matrices (step 0, which has
no previous step, left out), of the two reuse-error tensors, and the predicted error that each
profile gives the other profile's plans. Writes a JSON.

Usage: python benchmarks/calibration_stability.py --model shapes-flux --prompts 8 --out docs/results/calibration/stability.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from ditaccel import AcceleratedPipeline, load_pipeline  # noqa: E402
from ditaccel import models as embedded  # noqa: E402
from ditaccel.bench import case_call  # noqa: E402
from ditaccel.calibration import PlannerConfig, Profiler, plan_cache  # noqa: E402
from ditaccel.calibration.planner import block_costs, predicted_error  # noqa: E402


def profile_of(pipe, entry, cases, steps: int, name: str):
    calls = [
        case_call(
            c, pipe.adapter, steps=steps, height=entry.height, width=entry.width, extra=entry.call_defaults
        )
        for c in cases
    ]
    return Profiler(pipe).profile(calls, name, steps)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    keep = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[keep], b[keep])[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-flux")
    parser.add_argument("--task", default="t2i")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--out", type=Path, default=Path("docs/results/calibration/stability.json"))
    args = parser.parse_args()
    entry = embedded.get(args.model)
    plain = load_pipeline(args.model, pipeline_class=entry.pipeline_for(args.task))
    plain.set_progress_bar_config(disable=True)
    pipe = AcceleratedPipeline.from_pipe(plain, methods=[])
    bench_cases = entry.cases[args.task]()[: args.prompts]
    calibration_cases = entry.calibration_cases(args.task, args.prompts)
    if {c.prompt for c in bench_cases} & {c.prompt for c in calibration_cases}:
        print("warning: the two prompt sets share prompts")
    a = profile_of(pipe, entry, calibration_cases, args.steps, "calibration prompts")
    b = profile_of(pipe, entry, bench_cases, args.steps, "bench prompts")
    change_a, change_b = np.asarray(a.block_change)[1:], np.asarray(b.block_change)[1:]
    report = {
        "model": args.model,
        "task": args.task,
        "prompts": args.prompts,
        "steps": args.steps,
        "block_change_correlation": correlation(change_a.ravel(), change_b.ravel()),
        "block_change_mean_abs_diff": float(np.abs(change_a - change_b).mean()),
        "block_change_mean": float(change_a.mean()),
        "block_change_cv_mean": [
            float(np.mean(a.block_change_cv[1:])),
            float(np.mean(b.block_change_cv[1:])),
        ],
        "reuse_error_correlation": {
            name: correlation(a.tensors[name].numpy().ravel(), b.tensors[name].numpy().ravel())
            for name in a.tensors
        },
        "attention_correlation": correlation(np.asarray(a.attention), np.asarray(b.attention)),
        "block_flops_share": block_costs(a).tolist(),
        "plans": [],
    }
    for target in (0.6, 0.5, 0.4):
        plan_a = plan_cache(a, PlannerConfig(flops_ratio=target))
        plan_b = plan_cache(b, PlannerConfig(flops_ratio=target))
        report["plans"].append({
            "flops_ratio": target,
            "error_of_plan_a_on_a": predicted_error(a, plan_a),
            "error_of_plan_a_on_b": predicted_error(b, plan_a),
            "error_of_plan_b_on_b": predicted_error(b, plan_b),
            "served_in_both": sum(len(set(x) & set(y)) for x, y in zip(plan_a.reuse, plan_b.reuse, strict=True)),
            "served": sum(len(x) for x in plan_a.reuse),
        })  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
