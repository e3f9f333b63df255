"""Step sensitivity: how much of a predicted reuse error reaches the final image, per step.

The planner predicts a plan's error from per-block forecast errors, each measured with every other
block computed. What it cannot see is what a step's error does downstream: measured on
shapes-flux, an error made in the first third of the schedule costs about 85x more image MSE
than the same predicted error in the last third (the layout is still forming; late errors are
detail). So ``calibrate`` serves every block at one step ``t`` alone (Taylor order 1 from the two
steps before), measures the image error against the plain run, and keeps
``sqrt(MSE_t) / predicted_t``: the gain from the planner's error to the image's. The planner's
``weighting=measured`` multiplies each step's predicted error by it. Step 0 is never served; it
takes step 1's value.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .plan_runner import PlanRunner
from .planner import CachePlan
from .profile import Profile

SENSITIVITY_PROMPTS = 2  # of the verification calls; one run per step each


def step_sensitivity(runner: PlanRunner, profile: Profile, prompts: int = SENSITIVITY_PROMPTS,
                     progress: Any = None) -> list[float]:  # fmt: skip
    """Per step of ``profile``: measured image error over predicted error of serving every block there."""
    tick = progress or (lambda _d: None)
    order0 = profile.tensors["reuse_error_order0"].double().numpy()
    order1 = profile.tensors["reuse_error_order1"].double().numpy()
    steps, blocks = profile.steps, len(profile.blocks)
    gains = np.full(steps, np.nan)
    for t in range(1, steps):
        reuse = [[] for _ in range(steps)]
        reuse[t] = list(range(blocks))
        # (a target below 1: calibrated-cache runs nothing at flops_ratio=1)
        plan = CachePlan(steps, 1, reuse, 1.0 - 1.0 / steps, None, {"flops_ratio": 0.999})
        predicted = order1[:, t, 0, 0].sum() if t >= 2 else order0[:, t, 0].sum()
        mse = runner.measure(profile, plan, calls=prompts)["mse"]
        if np.isfinite(predicted) and predicted > 0:
            gains[t] = np.sqrt(mse) / predicted
        tick("step sensitivity")
    known = np.flatnonzero(np.isfinite(gains))
    if not len(known):
        return []
    filled = np.interp(np.arange(steps), known, gains[known])  # unmeasured steps: nearest neighbours
    return [round(float(x), 8) for x in filled]
