"""Which denoising steps compute every block: DeepCache's uniform and non-uniform schedules.

Uniform: every ``interval``-th step. Non-uniform (DeepCache, section 3.3): the same number of full
steps, ``ceil(T / interval)``, placed densely around a centre step and sparsely far from it, at
``c + floor(sign(x) |x|^p)`` for ``x`` evenly spaced in ``[-c^(1/p), (T - c)^(1/p)]``; ``p`` is lowered
in steps of 0.02 until the positions are that many distinct steps. Warm-up and final steps are
always full on top of either schedule.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Kind = Literal["uniform", "nonuniform"]
POWER_STEP = 0.02  # DeepCache lowers the exponent by this until the step count fits


def uniform(total: int, interval: int, offset: int = 0) -> set[int]:
    """Steps ``offset, offset + interval, ...`` below ``total``."""
    return set(range(offset, total, interval))


def nonuniform(total: int, interval: int, center: int, power: float) -> set[int]:
    """``ceil(total / interval)`` full steps, dense around ``center`` (step 0 always included)."""
    count = math.ceil(total / interval)
    if count >= total:
        return set(range(total))
    p = power
    while p >= 1.0:
        xs = np.linspace(-(center ** (1 / p)), (total - 1 - center) ** (1 / p), count)
        steps = {0} | {int(center + math.copysign(math.floor(abs(x) ** p), x)) for x in xs}
        steps = {s for s in steps if 0 <= s < total}
        if len(steps) == count:
            return steps
        p = round(p - POWER_STEP, 10)
    # No exponent in [1, power] gives exactly `count` distinct steps (tiny schedules): spread evenly.
    return {int(round(s)) for s in np.linspace(0, total - 1, count)}


def full_steps(
    total: int,
    interval: int,
    kind: Kind = "uniform",
    *,
    warmup: int = 0,
    final: int = 0,
    center: float = 0.3,
    power: float = 1.4,
) -> frozenset[int]:
    """Steps of a ``total``-step call on which every block runs.

    ``center`` is the non-uniform schedule's centre as a share of the schedule (DeepCache's 15 of
    50 steps is 0.3); uniform schedules count their interval from the end of the warm-up.
    """
    if interval <= 1:
        return frozenset(range(total))
    if kind == "uniform":
        steps = uniform(total, interval, offset=warmup)
    else:
        steps = nonuniform(total, interval, min(total - 1, max(0, round(center * total))), power)
    steps |= set(range(min(warmup, total)))
    steps |= set(range(max(0, total - final), total))
    return frozenset(steps)
