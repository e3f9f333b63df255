"""Reading inputs and writing outputs of pipeline calls: images, masks, videos."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .metrics.image import as_float_images


def load_image(path: str | Path) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    return Image.open(path).convert("RGB")


def load_mask(path: str | Path) -> Image.Image:
    """A mask image as single-channel L (white = region to edit)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no mask at {path}")
    return Image.open(path).convert("L")


def output_images(output: Any) -> Any:
    """The images (or video frames) of a diffusers pipeline output."""
    for name in ("images", "frames"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    if isinstance(output, tuple):
        return output[0]
    raise TypeError(f"cannot find images in a {type(output).__name__}")


def to_pil(images: Any) -> list[Image.Image]:
    """Every image / frame as an 8-bit RGB PIL image."""
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(i, Image.Image) for i in images):
        return [i.convert("RGB") for i in images]
    arrays = as_float_images(images)
    return [
        Image.fromarray(
            (a * 255).round().astype(np.uint8).squeeze(-1)
            if a.shape[-1] == 1
            else (a * 255).round().astype(np.uint8)
        )
        for a in arrays
    ]


def save_output(images: Any, path: str | Path) -> Path:
    """Save one image as is; several images or video frames as a grid (or an animated GIF)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = to_pil(images)
    if len(frames) == 1:
        frames[0].save(path)
    elif path.suffix.lower() == ".gif":
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=125, loop=0)
    else:
        grid(frames).save(path)
    return path


def grid(images: list[Image.Image], columns: int | None = None) -> Image.Image:
    """Tile images of one size left to right, top to bottom."""
    columns = columns or min(len(images), 8)
    rows = -(-len(images) // columns)
    w, h = images[0].size
    canvas = Image.new("RGB", (columns * w, rows * h), "white")
    for i, img in enumerate(images):
        canvas.paste(img, ((i % columns) * w, (i // columns) * h))
    return canvas
