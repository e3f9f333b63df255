"""Drawing primitives for the shapes world: grey background textures and anti-aliased shape coverage.

Everything here works in *fractions of the image side*, so a picture drawn at 64, 128 or 256
pixels shows the same thing, only sharper. The functions know nothing about scenes or captions
(that is :mod:`ditaccel.shapes.world`); they turn numbers into float images in [0, 1].

Anti-aliasing: shapes are rasterised on a ``SUPERSAMPLE`` x ``SUPERSAMPLE`` grid of sub-pixels
inside their bounding box and averaged, which gives each pixel its covered fraction. Stripes and
checkers are averaged the same way along each axis (a checker pixel's mean follows from the two
axis means, because the pattern is an exclusive-or of two stripe patterns).
"""

from __future__ import annotations

import numpy as np

SUPERSAMPLE = 4  # sub-pixels per pixel along each axis
STRIPE_PERIOD = 1 / 16  # one dark + one light stripe, as a fraction of the side
CHECKER_CELL = 1 / 16  # side of one checker cell, as a fraction of the side
# Value noise: (lattice cells per side, weight) per octave. Lattice values are drawn once per seed
# at fixed resolutions, so the texture is the same picture at every image size. The finest cell is
# 8 px at 128: 4 px cells are incompressible for a 4x, 4-channel VAE (it paints colour specks).
NOISE_OCTAVES = ((4, 0.25), (8, 0.35), (16, 0.40))
NOISE_CONTRAST = 2.0  # stretch of the octave mix around its mean (the mix alone is too flat)

SHAPE_KINDS = ("circle", "square", "triangle")


def pixel_centres(size: int) -> np.ndarray:
    """Pixel centres along one axis, as fractions of the side."""
    return (np.arange(size) + 0.5) / size


def _subpixel_centres(start: int, stop: int, size: int) -> np.ndarray:
    """Sub-pixel centres of pixels ``start..stop-1`` along one axis, as fractions of the side."""
    steps = (np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    return ((np.arange(start, stop)[:, None] + steps[None, :]) / size).ravel()


def _band_fraction(size: int, band: float) -> np.ndarray:
    """Per pixel along one axis: the share of it lying in odd bands of width ``band``."""
    odd = (np.floor(_subpixel_centres(0, size, size) / band) % 2).astype(np.float64)
    return odd.reshape(size, SUPERSAMPLE).mean(axis=1)


def stripes(size: int, dark: float, light: float, vertical: bool) -> np.ndarray:
    """Grey (size, size) image of alternating dark / light stripes, period ``STRIPE_PERIOD``."""
    frac = _band_fraction(size, STRIPE_PERIOD / 2)
    profile = dark + (light - dark) * frac
    return np.tile(profile[None, :], (size, 1)) if vertical else np.tile(profile[:, None], (1, size))


def checkers(size: int, dark: float, light: float) -> np.ndarray:
    """Grey (size, size) checkerboard of ``CHECKER_CELL`` cells."""
    a = _band_fraction(size, CHECKER_CELL)
    light_share = a[:, None] * (1 - a[None, :]) + (1 - a[:, None]) * a[None, :]
    return dark + (light - dark) * light_share


def value_noise(size: int, seed: int, low: float, high: float) -> np.ndarray:
    """Grey (size, size) value noise in [low, high]: smoothly interpolated random lattices."""
    rng = np.random.default_rng(seed)
    u = pixel_centres(size)
    total = np.zeros((size, size))
    for cells, weight in NOISE_OCTAVES:
        lattice = rng.random((cells + 1, cells + 1))
        pos = u * cells
        i = np.minimum(pos.astype(int), cells - 1)
        t = pos - i
        t = t * t * (3 - 2 * t)  # smoothstep: no visible lattice creases
        rows = lattice[i] * (1 - t)[:, None] + lattice[i + 1] * t[:, None]  # (size, cells + 1)
        total += weight * (rows[:, i] * (1 - t)[None, :] + rows[:, i + 1] * t[None, :])
    mean = sum(weight for _, weight in NOISE_OCTAVES) / 2
    stretched = np.clip(0.5 + NOISE_CONTRAST * (total - mean), 0.0, 1.0)
    return low + (high - low) * stretched


def _inside(kind: str, dx: np.ndarray, dy: np.ndarray, half: float) -> np.ndarray:
    """Whether offsets (dx, dy) from the centre lie inside the shape of half-extent ``half``.

    The triangle points up, its base and height both ``2 * half`` (it fills half its box).
    """
    if kind == "circle":
        return dx**2 + dy**2 <= half**2
    if kind == "square":
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    if kind == "triangle":
        return (dy <= half) & (np.abs(dx) <= (dy + half) / 2)
    raise ValueError(f"unknown shape kind {kind!r}; expected one of {SHAPE_KINDS}")


def coverage(kind: str, centre: tuple[float, float], half: float, size: int) -> np.ndarray:
    """Float (size, size) map of the share of each pixel the shape covers (0 outside its box).

    ``centre`` is (x, y) and ``half`` the half-extent, both as fractions of the side.
    """
    cx, cy = centre
    out = np.zeros((size, size))
    c0, c1 = max(0, int(np.floor((cx - half) * size))), min(size, int(np.ceil((cx + half) * size)))
    r0, r1 = max(0, int(np.floor((cy - half) * size))), min(size, int(np.ceil((cy + half) * size)))
    if c0 >= c1 or r0 >= r1:
        return out
    xs = _subpixel_centres(c0, c1, size) - cx
    ys = _subpixel_centres(r0, r1, size) - cy
    inside = _inside(kind, xs[None, :], ys[:, None], half).astype(np.float64)
    blocks = inside.reshape(r1 - r0, SUPERSAMPLE, c1 - c0, SUPERSAMPLE)
    out[r0:r1, c0:c1] = blocks.mean(axis=(1, 3))
    return out
