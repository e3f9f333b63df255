"""Image agreement metrics (PSNR, SSIM) that work offline, on images, arrays or videos.

Inputs may be PIL images, numpy arrays (uint8 0-255 or float 0-1, HxWxC, or a leading frame /
batch axis) or lists of those; they are compared as float images in [0, 1]. Identical inputs
have infinite PSNR.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

SSIM_MIN_SIDE = 7  # skimage's default SSIM window
PSNR_CAP = 99.0  # an exact result's infinite PSNR, as reports and comparisons write it


def as_float_images(x: Any) -> np.ndarray:
    """Stack of float64 images in [0, 1], shape (N, H, W, C)."""
    if isinstance(x, (list, tuple)):
        return np.concatenate([as_float_images(item) for item in x])
    if hasattr(x, "convert"):  # PIL
        x = np.asarray(x.convert("RGB"))
    if hasattr(x, "detach"):  # torch
        x = x.detach().cpu().float().numpy()
    x = np.asarray(x)
    x = x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim == 3:
        x = x[None]
    while x.ndim > 4:  # (batch, frames, H, W, C)
        x = x.reshape(-1, *x.shape[-3:])
    return np.clip(x, 0.0, 1.0)


def _pair(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_float_images(a), as_float_images(b)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare images of shapes {a.shape} and {b.shape}")
    return a, b


def psnr(a: Any, b: Any, mask: Any = None) -> float:
    """Peak signal-to-noise ratio in dB (peak 1.0) over all pixels, or where ``mask`` is true."""
    a, b = _pair(a, b)
    err = (a - b) ** 2
    if mask is not None:
        keep = as_float_images(mask)[..., 0] > 0.5
        keep = np.broadcast_to(keep, err.shape[:-1])
        if not keep.any():
            raise ValueError("the PSNR mask selects no pixel")
        err = err[keep]
    return psnr_from_mse(float(err.mean()))


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB of a mean squared error at peak 1.0 (infinite for 0)."""
    return float("inf") if mse == 0 else 10.0 * float(np.log10(1.0 / mse))


def ssim(a: Any, b: Any) -> float:
    """Mean structural similarity over images / frames (1.0 for identical inputs)."""
    a, b = _pair(a, b)
    if min(a.shape[1:3]) < SSIM_MIN_SIDE:
        raise ValueError(f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE}, got {a.shape[1:3]}")
    return float(
        np.mean(
            [structural_similarity(x, y, channel_axis=-1, data_range=1.0) for x, y in zip(a, b, strict=True)]
        )
    )
