"""The profile's reuse errors on another step grid: the same noise levels, other step indices.

The profiler measures, at its step count, the error of serving a block at step ``t`` from its
residuals ``g`` steps back. A call with another step count visits other noise levels with other
gaps between them, so a plan cannot copy step indices (14 steps: one step spans two profiled
ones; 50 steps: half of one). Here each step of the call is placed on the profile's grid by its
sigma (a fractional profiled step), and each gap becomes the fractional distance in profiled steps
between the two sigmas; the error is read by linear interpolation over step and gap, with an
error of 0 at gap 0 (a forecast from the step itself is exact). Gaps beyond the profiled
``max_gap`` have no measurement: they are not allowed (``nan``).
"""

from __future__ import annotations

import numpy as np
import torch

from .profile import Profile


def _positions(profile: Profile, sigmas: list[float] | None, steps: int) -> np.ndarray:
    """Each call step's fractional position on the profile's step grid."""
    grid = np.asarray(profile.sigmas[: profile.steps], dtype=np.float64)
    if sigmas is not None and len(sigmas) >= steps and len(grid) == profile.steps:
        wanted = np.asarray(sigmas[:steps], dtype=np.float64)
        if np.all(np.diff(grid) < 0):  # noise falls along the schedule: interpolate on reversed axes
            return np.interp(wanted, grid[::-1], np.arange(profile.steps)[::-1].astype(np.float64))
    # no sigmas to go by: the same share of the schedule
    return np.linspace(0.0, profile.steps - 1, steps) if steps > 1 else np.zeros(1)


def _lerp_axis(values: np.ndarray, x: np.ndarray, axis: int) -> np.ndarray:
    """``values`` linearly interpolated at the fractional indices ``x`` along ``axis`` (clamped);
    where one of the two neighbours is nan, the other."""
    size = values.shape[axis]
    x = np.clip(x, 0.0, size - 1)
    low = np.floor(x).astype(int)
    high = np.minimum(low + 1, size - 1)
    w = (x - low).reshape([-1 if i == axis else 1 for i in range(values.ndim)])
    a, b = np.take(values, low, axis=axis), np.take(values, high, axis=axis)
    w = np.broadcast_to(w, a.shape)
    # an unmeasured neighbour (nan: a gap reaching before step 0) leaves the measured one
    return np.where(np.isnan(b), a, np.where(np.isnan(a), b, a * (1 - w) + b * w))


class ErrorModel:
    """Reuse errors for a call of ``steps`` steps at ``sigmas`` (default: the profile's own grid).

    ``order0[b, t, g - 1]``: serving block ``b`` at step ``t`` from its residual ``g`` steps back;
    ``order1[b, t, g0 - 1, g1 - 1]``: from a linear forecast off the steps ``g0`` and ``g0 + g1`` back.
    """

    @staticmethod
    def positions_of(profile: Profile, steps: int, sigmas: list[float] | None) -> np.ndarray:
        """Each call step's fractional position on the profile's step grid."""
        if _profiled_grid(profile, steps, sigmas):
            return np.arange(steps, dtype=np.float64)
        return _positions(profile, sigmas, steps)

    def __init__(self, profile: Profile, steps: int | None = None, sigmas: list[float] | None = None) -> None:
        order0 = profile.tensors["reuse_error_order0"].double().numpy()
        order1 = profile.tensors["reuse_error_order1"].double().numpy()
        self.steps = steps or profile.steps
        self.profiled_gap = order0.shape[2]
        self.positions = u = self.positions_of(profile, self.steps, sigmas)
        if _profiled_grid(profile, self.steps, sigmas):
            self.order0, self.order1, self.max_gap = order0, order1, self.profiled_gap
            return
        # gaps (in call steps) up to the one whose profiled distance can stay measured somewhere;
        # pairs farther apart than the profiled max_gap are nan (not allowed)
        spacing = np.diff(u).min() if len(u) > 1 else 1.0
        self.max_gap = int(
            min(max(self.steps - 1, 1), np.floor(self.profiled_gap / max(spacing, 1e-9) + 1e-9))
        )
        blocks, g = order0.shape[0], self.max_gap
        padded0 = np.concatenate([np.zeros((blocks, order0.shape[1], 1)), order0], axis=2)  # gap from 0
        self.order0 = np.full((blocks, self.steps, g), np.nan)
        self.order1 = np.full((blocks, self.steps, g, g), np.nan)
        for t in range(1, self.steps):
            at0 = _lerp_axis(padded0, np.array([u[t]]), axis=1)[:, 0]  # (blocks, gap + 1)
            at1 = _lerp_axis(order1, np.array([u[t]]), axis=1)[:, 0]  # (blocks, gap, gap)
            for g0 in range(1, min(g, t) + 1):
                d0 = u[t] - u[t - g0]
                if d0 > self.profiled_gap + 1e-9:
                    break
                self.order0[:, t, g0 - 1] = _lerp_axis(at0, np.array([d0]), axis=1)[:, 0]
                g1 = np.arange(1, min(g, t - g0) + 1)
                d1 = u[t - g0] - u[t - g0 - g1]
                g1, d1 = g1[d1 <= self.profiled_gap + 1e-9], d1[d1 <= self.profiled_gap + 1e-9]
                if not len(g1):
                    continue
                # a slope over less than one profiled step is read as over one
                at_d1 = _lerp_axis(at1, np.maximum(d1, 1.0) - 1.0, axis=2)  # (blocks, gap, len(g1))
                padded = np.concatenate([np.zeros((blocks, 1, len(g1))), at_d1], axis=1)
                self.order1[:, t, g0 - 1, g1 - 1] = _lerp_axis(padded, np.array([d0]), axis=1)[:, 0]


def _profiled_grid(profile: Profile, steps: int, sigmas: list[float] | None) -> bool:
    """Whether a call of ``steps`` steps at ``sigmas`` runs on the profile's own step grid."""
    if steps != profile.steps or sigmas is None:
        return steps == profile.steps
    if len(sigmas) < steps or len(profile.sigmas) < steps:
        return len(profile.sigmas) < steps  # the profile kept no sigmas: nothing to compare
    return bool(
        np.allclose(
            np.asarray(sigmas[:steps], dtype=np.float64), np.asarray(profile.sigmas[:steps]), atol=1e-4
        )
    )


def call_sigmas(scheduler) -> list[float] | None:
    """The sigmas a scheduler set for the current call, if it keeps them."""
    sigmas = getattr(scheduler, "sigmas", None)
    if isinstance(sigmas, torch.Tensor) and sigmas.numel() > 1:
        return [float(s) for s in sigmas.float().cpu().tolist()]
    return None
