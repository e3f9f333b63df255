"""How much a PSNR comparison over a few prompts can be trusted: bootstrap intervals over inputs.

The bench's PSNR pools the squared error of all inputs, so one input whose image changes (a shape
moved by a pixel) can move it by several dB; two methods compared on the same 8 prompts differ
by their methods and by which prompts they happen to break. Resampling the inputs (the same ones
for every method compared: paired) gives an interval for a pooled PSNR, a difference of two, or a
difference against a front interpolated between two rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats

from .image import PSNR_CAP

CONFIDENCE = 0.9
RESAMPLES = 2000


def min_inputs(confidence: float = CONFIDENCE) -> int:
    """The fewest inputs a percentile bootstrap interval at ``confidence`` can be read from: ``n``
    inputs give ``C(2n-1, n)`` distinct resamples, and each tail of the interval needs at least one
    resample of its own, so ``C(2n-1, n) >= 2 / (1 - confidence)`` (4 inputs at 90%: 35 >= 20; 3
    give only 10, and the interval's ends would be the statistic's extremes)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = 2
    while math.comb(2 * n - 1, n) < 2.0 / (1.0 - confidence):
        n += 1
    return n


def pooled_psnr(mse: np.ndarray, axis: int = -1) -> np.ndarray:
    """PSNR (dB, peak 1) of the mean of per-input squared errors along ``axis``, capped at
    :data:`PSNR_CAP` (an exact method)."""
    mean = np.mean(mse, axis=axis)
    with np.errstate(divide="ignore"):
        return np.minimum(-10.0 * np.log10(mean), PSNR_CAP)


def interval(
    statistic: Callable[..., np.ndarray],
    samples: Sequence[Sequence[float]],
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*samples, axis=-1)`` over inputs, every sample
    resampled with the same inputs (they are per-input values of methods run on the same inputs)."""
    arrays = [np.asarray(s, dtype=np.float64) for s in samples]
    if len({len(a) for a in arrays}) != 1 or len(arrays[0]) < 2:
        raise ValueError("paired per-input samples of equal length >= 2 are needed")
    if all(np.all(a == a[0]) for a in arrays):  # nothing to resample: the statistic itself
        value = float(statistic(*arrays, axis=-1))
        return value, value
    result = stats.bootstrap(
        arrays, statistic, paired=True, vectorized=True, method="percentile",
        confidence_level=confidence, n_resamples=RESAMPLES, rng=np.random.default_rng(seed),
    )  # fmt: skip
    low, high = result.confidence_interval
    return float(low), float(high)


def psnr_difference(mse_a: Sequence[float], mse_b: Sequence[float], **kwargs) -> tuple[float, float]:
    """Interval of ``pooled_psnr(a) - pooled_psnr(b)`` (same inputs)."""
    return interval(lambda a, b, axis: pooled_psnr(a, axis) - pooled_psnr(b, axis), [mse_a, mse_b], **kwargs)


def front_difference(
    mse: Sequence[float],
    lower: Sequence[float],
    upper: Sequence[float],
    weight: float,
    **kwargs,
) -> tuple[float, float]:
    """Interval of ``pooled_psnr(mse)`` minus a front interpolated between two rows: ``(1 - weight)
    * pooled_psnr(lower) + weight * pooled_psnr(upper)`` (same inputs)."""

    def gap(a, lo, hi, axis):
        return pooled_psnr(a, axis) - (
            (1.0 - weight) * pooled_psnr(lo, axis) + weight * pooled_psnr(hi, axis)
        )

    return interval(gap, [mse, lower, upper], **kwargs)
