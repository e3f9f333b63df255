"""Whole-step cache schedules from the profile's measured drift: ``adaptive-cache``'s rule, run ahead.

``adaptive-cache`` (``decide=rate``) serves whole steps while the cached residual's measured
drift rate times the steps since the last compute stays below a threshold that ramps up over the
schedule, and computes again after at most ``max_gap`` served steps. On shapes-flux what it
computes hardly depends on the prompt (28 steps, threshold 0.05, the 8 calibration prompts: 15 or
16 computed steps each, the first 7-9 all computed, then every second or third step, half of the
prompts in one identical pattern and the others shifted by a step;
``benchmarks/adaptive_patterns.py``), so the rule can be run on the
profile's mean per-step change of the blocks' residuals (``block_change``) instead of on the
call, with the threshold searched for the step pattern that lands on a FLOPs target. The drift over a gap is taken as the sum of the
per-step changes in it (consecutive changes of a smooth trajectory point the same way); off the
profile's grid the per-step change is read at each call step's position and scaled by the step's
length in profiled steps.
"""

from __future__ import annotations

import numpy as np

from .error_model import ErrorModel
from .profile import Profile

# thresholds searched for the pattern nearest the target: geometric, wide enough that the
# smallest computes every step and the largest serves every step it may
THRESHOLDS = np.geomspace(1e-4, 1e2, 600)


def call_drift(profile: Profile, steps: int, sigmas: list[float] | None = None) -> np.ndarray:
    """The profile's mean per-step change of the blocks' residuals, at each of a call's ``steps``
    (``sigmas``: its noise levels; entry 0, the first step, has no previous step: 0)."""
    mean = np.asarray(profile.block_change, dtype=np.float64).mean(axis=1)
    positions = ErrorModel.positions_of(profile, steps, sigmas)
    lengths = np.diff(positions, prepend=positions[0])  # in profiled steps; 0 for the first
    # the profile's step 0 has no previous step (its change is 0, not small): read from step 1 on
    return np.interp(positions, np.arange(1, profile.steps), mean[1:]) * lengths


def drift_pattern(
    drift: np.ndarray, threshold: float, ramp: float, max_gap: int, first: int = 1
) -> np.ndarray:
    """Which steps compute under the rate rule at ``threshold`` (ramped to ``1 + ramp`` times by
    the last step), serving at most ``max_gap`` steps in a row; the first ``first`` steps and the
    one after the first compute (no rate measured yet) always compute."""
    steps = len(drift)
    computed = np.zeros(steps, dtype=bool)
    last, rate, served = None, None, 0
    for t in range(steps):
        limit = threshold * (1.0 + ramp * t / max(steps - 1, 1))
        if t >= first and rate is not None and served < max_gap and rate * (t - last) < limit:
            served += 1
            continue
        computed[t] = True
        if last is not None:
            rate = float(drift[last + 1 : t + 1].sum()) / (t - last)
        last, served = t, 0
    return computed


def drift_patterns(drift: np.ndarray, ramp: float, max_gap: int, first: int = 1) -> list[np.ndarray]:
    """The distinct step patterns of :func:`drift_pattern` over :data:`THRESHOLDS` (dearest first)."""
    patterns: dict[bytes, np.ndarray] = {}
    for threshold in THRESHOLDS:
        pattern = drift_pattern(drift, float(threshold), ramp, max_gap, first)
        patterns.setdefault(pattern.tobytes(), pattern)
    return sorted(patterns.values(), key=lambda p: -int(p.sum()))
