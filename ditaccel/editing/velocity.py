"""RegionE's adaptive velocity decay cache for the edited tokens of region steps.

Between two computed steps the edited tokens' velocity changes by a measurable relative amount
per step, and its magnitude shrinks by a measurable ratio. A step may reuse the last computed
velocity, scaled by that ratio, while the change it is predicted to have missed (rate x steps since
the last compute) stays within ``tolerance``; ``max_reuse`` caps the run of reused steps. The rate
and ratio are measured online from the two last computed steps (full or region steps), so the
cache calibrates itself on every call instead of relying on a fixed table.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_TINY = 1e-12


@dataclass
class VelocityCache:
    """The last computed velocity of the edited tokens, its change rate and decay ratio."""

    tolerance: float
    max_reuse: int
    step: int | None = None
    velocity: torch.Tensor | None = None
    rate: float | None = None  # mean relative change per step between the two last computes
    decay: float = 1.0  # per-step ratio of the mean magnitude between them

    def record(self, step: int, velocity: torch.Tensor) -> None:
        """A velocity computed at ``step`` (same tokens as the previous record)."""
        if self.velocity is not None and step > self.step and self.velocity.shape == velocity.shape:
            gap = step - self.step
            size = float(self.velocity.abs().mean())
            self.rate = float((velocity - self.velocity).abs().mean()) / max(size, _TINY) / gap
            self.decay = (float(velocity.abs().mean()) / max(size, _TINY)) ** (1.0 / gap)
        else:
            self.rate, self.decay = None, 1.0
        self.step, self.velocity = step, velocity

    def forecast(self, step: int) -> torch.Tensor | None:
        """The velocity to use at ``step`` without computing, or None when it must be computed."""
        if self.velocity is None or self.rate is None or self.tolerance <= 0.0:
            return None
        gap = step - self.step
        if gap < 1 or gap > self.max_reuse or self.rate * gap > self.tolerance:
            return None
        return self.velocity * self.decay**gap
