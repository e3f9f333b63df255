"""Which tokens an instruction edit changes, estimated mid-denoising (RegionE).

After the warm-up steps, the flow-matching velocity gives a one-step estimate of the clean latent,
``x0 ~ x_t + (sigma_end - sigma_t) * v``. Tokens whose estimate still points the same way as the
reference (source) latent's token (cosine similarity above ``threshold``) are unedited; the rest are
edited. The token mask is cleaned on the token grid: an erosion removes isolated specks, a larger
dilation grows the region so its border (where the edit blends in) is recomputed too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_step_estimate(latents: torch.Tensor, velocity: torch.Tensor, sigma: float, target: float = 0.0) -> torch.Tensor:  # fmt: skip
    """The latent at noise level ``target`` reached in one Euler step from ``sigma`` (0: clean)."""
    return latents + (target - sigma) * velocity


def clean_token_mask(mask: torch.Tensor, rows: int, cols: int, erode: int = 1, dilate: int = 2) -> torch.Tensor:  # fmt: skip
    """``mask`` (B, rows*cols) bool, eroded with a cross of radius ``erode`` then dilated with a
    square of radius ``dilate`` on the token grid."""
    if mask.shape[-1] != rows * cols:
        raise ValueError(f"a token mask of {mask.shape[-1]} tokens is not a {rows}x{cols} grid")
    grid = mask.reshape(-1, 1, rows, cols).float()
    if erode:
        cross = torch.zeros(1, 1, 2 * erode + 1, 2 * erode + 1)
        cross[..., erode, :] = 1
        cross[..., :, erode] = 1
        hits = F.conv2d(grid, cross.to(grid), padding=erode)
        grid = (hits >= cross.sum()).float()  # kept only where the whole cross is inside
    if dilate:
        grid = F.max_pool2d(grid, 2 * dilate + 1, stride=1, padding=dilate)
    return grid.reshape(mask.shape).bool()


def edited_tokens(
    estimate: torch.Tensor,
    reference: torch.Tensor,
    rows: int,
    cols: int,
    threshold: float,
    erode: int = 1,
    dilate: int = 2,
) -> torch.Tensor:
    """Bool (B, rows*cols): tokens of ``estimate`` (B, N, C) whose cosine similarity to the same
    token of ``reference`` is at most ``threshold``, cleaned on the grid."""
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate {tuple(estimate.shape)} and reference {tuple(reference.shape)} differ")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold}")
    similarity = F.cosine_similarity(estimate.float(), reference.float(), dim=-1)
    return clean_token_mask(similarity <= threshold, rows, cols, erode, dilate)
