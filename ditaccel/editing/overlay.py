"""See which tokens an edit recomputed: the partition drawn over the image."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def overlay(image: Image.Image | np.ndarray, tokens: torch.Tensor | np.ndarray, alpha: float = 0.45) -> Image.Image:  # fmt: skip
    """``image`` with the ``tokens`` (bool (rows, cols) grid, True = recomputed) tinted red and
    the others dimmed, each token covering its share of the image."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    grid = np.asarray(tokens, dtype=np.uint8) * 255
    if grid.ndim != 2:
        raise ValueError(f"tokens must be a (rows, cols) grid, got shape {grid.shape}")
    cover = np.asarray(Image.fromarray(grid).resize(picture.size, Image.NEAREST)) > 0
    pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)
    red = np.array([255.0, 0.0, 0.0], dtype=np.float32)
    tinted = np.where(cover[..., None], (1 - alpha) * pixels + alpha * red, (1 - alpha / 2) * pixels)
    return Image.fromarray(tinted.clip(0, 255).astype(np.uint8))
