"""User masks for mask edits: checked, brought to the token grid, and topped up with the source's
high-frequency tokens (HiLo-Token's selection, training-free).

Tokens inside the (dilated) mask are recomputed; outside it, tokens over edges and texture are the
ones cached features reproduce worst, so the sharpest ``budget`` share of them (Sobel magnitude of
the source pooled per token) is recomputed as well.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.filters import sobel


def single_image(image, name: str = "image"):
    """The one image of a call's ``image`` / ``mask_image`` argument (a PIL image, an array or a
    tensor, alone or as the only item of a list); None for none. ValueError for several, TypeError
    for anything else."""
    if isinstance(image, (list, tuple)):
        if len(image) != 1:
            raise ValueError(f"region edits take one {name} per call, got {len(image)}")
        image = image[0]
    if image is not None and not isinstance(image, (Image.Image, np.ndarray, torch.Tensor)):
        raise TypeError(
            f"{name} must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}"
        )
    if isinstance(image, (np.ndarray, torch.Tensor)):
        while image.ndim > 2 and image.shape[0] == 1 and not (image.ndim == 3 and image.shape[-1] in (3, 4)):
            image = image[0]  # leading batch / channel axes of size 1
        if image.ndim == 4 or (
            image.ndim == 3 and image.shape[-1] not in (1, 3, 4) and image.shape[0] not in (1, 3, 4)
        ):
            raise ValueError(
                f"region edits take one {name} per call, got an array of shape {tuple(image.shape)}"
            )
    return image


def image_size(image) -> tuple[int, int]:
    """(height, width) of a PIL image, an (H, W[, C]) array or a (C, H, W) tensor."""
    if isinstance(image, Image.Image):
        return image.size[1], image.size[0]
    shape = tuple(image.shape)
    if len(shape) == 3 and isinstance(image, torch.Tensor) and shape[0] in (1, 3, 4):
        return shape[1], shape[2]
    return shape[0], shape[1]


def grey(image: Image.Image | np.ndarray | torch.Tensor) -> np.ndarray:
    """Grey values in [0, 1], (H, W), laid out as :func:`image_size` reads the image."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    channels_first = isinstance(image, torch.Tensor) and image.ndim == 3 and image.shape[0] in (1, 3, 4)
    array = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    array = array.astype(np.float32)
    if array.ndim == 3:
        array = array.mean(0) if channels_first else array.mean(-1)
    if array.max() > 1.0:
        array = array / 255.0
    return array


def mask_pixels(mask, image_size: tuple[int, int]) -> torch.Tensor:
    """Bool (H, W): the masked pixels (white = edit). ValueError for a mask of another size than
    the image (height, width) or an empty mask."""
    pixels = grey(mask) >= 0.5
    if pixels.shape != tuple(image_size):
        raise ValueError(
            f"the mask is {pixels.shape[1]}x{pixels.shape[0]}, the image {image_size[1]}x{image_size[0]}"
        )
    if not pixels.any():
        raise ValueError("the mask is empty: nothing to edit")
    return torch.from_numpy(pixels)


def pixel_tokens(pixels: torch.Tensor, rows: int, cols: int, dilate: int = 1) -> torch.Tensor:
    """Bool (rows*cols,): tokens covering any of the ``pixels`` (bool (H, W)), dilated by
    ``dilate`` tokens."""
    covered = F.adaptive_max_pool2d(pixels.float()[None, None], (rows, cols))
    if dilate:
        covered = F.max_pool2d(covered, 2 * dilate + 1, stride=1, padding=dilate)
    return covered.flatten().bool()


def mask_tokens(mask, image_size: tuple[int, int], rows: int, cols: int, dilate: int = 1) -> torch.Tensor:
    """Bool (rows*cols,): tokens covering any masked pixel (white = edit), dilated by ``dilate``
    tokens. ValueError for a mask of another size than the image (height, width) or an empty mask."""
    return pixel_tokens(mask_pixels(mask, image_size), rows, cols, dilate)


def high_frequency_tokens(source, rows: int, cols: int, outside: torch.Tensor, budget: float) -> torch.Tensor:  # fmt: skip
    """Bool (rows*cols,): the ``budget`` share of the ``outside`` tokens with the strongest edges
    in ``source`` (mean Sobel magnitude per token)."""
    if not 0.0 <= budget <= 1.0:
        raise ValueError(f"budget must be in [0, 1], got {budget}")
    edges = torch.from_numpy(sobel(grey(source)).astype(np.float32))[None, None]
    energy = F.adaptive_avg_pool2d(edges, (rows, cols)).flatten()
    chosen = torch.zeros(rows * cols, dtype=torch.bool)
    count = int(round(budget * int(outside.sum())))
    if count:
        scores = torch.where(outside, energy, torch.full_like(energy, -1.0))
        chosen[scores.topk(count).indices] = True
    return chosen
