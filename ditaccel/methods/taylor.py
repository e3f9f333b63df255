"""TaylorSeer's forecast of a cached feature from its values at the last full steps.

On full steps the feature's finite differences are updated up to ``order``:
``D0 = F``, ``D(i+1) = (Di_new - Di_old) / d`` with ``d`` the steps between the last two full steps;
on a skipped step ``k`` steps later the feature is forecast as ``sum_i Di k^i / i!``. Order 0 is
plain reuse of the last value.
"""

from __future__ import annotations

import math

import torch


class TaylorSeries:
    """Finite differences of one tensor feature, and its forecast at a later step."""

    def __init__(self, order: int) -> None:
        if order < 0:
            raise ValueError(f"Taylor order must be >= 0, got {order}")
        self.order = order
        self.factors: list[torch.Tensor] = []
        self.step: int | None = None

    @property
    def ready(self) -> bool:
        return bool(self.factors)

    def update(self, value: torch.Tensor, step: int) -> None:
        """Record the feature's exact ``value`` at ``step`` (a full step)."""
        factors = [value]
        if self.step is not None and step > self.step:
            gap = step - self.step
            for i in range(min(self.order, len(self.factors))):
                factors.append((factors[i] - self.factors[i]) / gap)
        self.factors, self.step = factors, step

    def forecast(self, step: int) -> torch.Tensor:
        """The feature expected at ``step`` (after the last update)."""
        if not self.factors:
            raise RuntimeError("Taylor forecast asked before any full step")
        k = step - self.step
        out = self.factors[0]
        for i, factor in enumerate(self.factors[1:], start=1):
            out = out + factor * (k**i / math.factorial(i))
        return out
