"""Offline checker: does an image show a given scene? Classical image analysis only (numpy and
scipy.ndimage); no learned weights, so benchmark verdicts are reproducible.

How it reads an image (thresholds are fractions of the image side / area, so any size works; images
of 256 px and more are block-averaged down to about ``WORK_SIDE`` first, for speed, and images
under ``MIN_WORK_SIDE`` upsampled, so that the outlines of tiny shapes are read better):

1. Colour: a pixel belongs to an object when its chroma (max - min channel) is high, since the
   world's backgrounds are grey. Its colour is the palette colour nearest in hue, which is
   unchanged by blending with grey, so blurred edges and washed-out generations keep their colour.
2. Objects: connected components per colour; specks below ``MIN_OBJECT_AREA`` are ignored, and a
   component centred inside a bigger one's bounding box is a fragment of it (real shapes never
   overlap), not an object of its own.
3. An object's coverage of each pixel is estimated as its chroma over the object's typical
   chroma. Kind comes from moments of that coverage (see ``_kind``), which survive blur; the
   outline (coverage >= 1/2) gives a box whose centre's nearest anchor is the position (within
   ``POSITION_TOLERANCE``) and whose side says small or large.
4. Each expected shape takes the object at its anchor (the best-agreeing one if several), or else
   an unclaimed object of its colour and kind elsewhere (found, wrong position). Objects nobody
   claims are extra objects.
5. The background (grey pixels away from objects) is judged in its texture band (3-24 cycles per
   side: slower is shading, faster is pixel noise): plain when nearly flat there, else stripes
   or checkers when a few sharp spectral peaks hold most of the power (on an axis for stripes,
   off the axes for checkers), else noise.

Measured on renders (see tests/test_shapes.py): all but a few in a thousand judged correct at
32-300 px, also after a Gaussian blur of 1-2 px (at 128 px, scaled with the size) and colour
jitter; wrong specs and noise images are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .world import ANCHORS, COLORS, HALF_EXTENTS, EditPair, Scene, Shape

# Images at least twice this side are analysed block-averaged down by an integer factor (speed);
# images smaller than MIN_WORK_SIDE are upsampled (a small shape at 32 px is only 5 px across).
WORK_SIDE = 128
MIN_WORK_SIDE = 64
# Colour: chroma gate (the palette has chroma >= 0.58, backgrounds 0) in [0, 1] units.
MIN_CHROMA = 0.2
# Coverage of a pixel by an object: its chroma over the object's typical chroma (the
# CORE_REFERENCE_PERCENTILE of the object's pixels). The outline is where coverage >= CORE_COVERAGE.
CORE_REFERENCE_PERCENTILE = 90
CORE_COVERAGE = 0.5
# Kind: row skewness below this is a triangle (ideal -0.57, measured <= -0.25 on blurred 32 px
# renders; circles and squares within 0.05 of 0). A diagonal / axis fourth-cumulant ratio below
# this is a square (ideal 0.5, measured <= 0.69; circles 1, measured >= 0.91).
TRIANGLE_MAX_SKEW = -0.15
SQUARE_MAX_CUMULANT_RATIO = 0.8
# Objects: smallest component that counts, as a share of the image area (a quarter of a small
# triangle, which covers 0.5 * 0.16**2 = 1.3 % of the image).
MIN_OBJECT_AREA = 0.0032
# Position: an object's box centre must lie this close to an anchor (fraction of the side; anchors
# are 0.3 apart, a triangle's box centre is its anchor).
POSITION_TOLERANCE = 0.14
# Size: box side (mean of width and height, fraction of the side) between small (0.16) and large
# (0.25) boxes, geometric mean.
SIZE_THRESHOLD = float(np.sqrt(2 * HALF_EXTENTS["small"] * 2 * HALF_EXTENTS["large"]))
# Background: a plain background's grey varies less than this in the texture band (std, [0, 1]
# units).
PLAIN_MAX_STD = 0.025
# Background: share of the texture's (non-constant) spectral power in its strongest bins above
# which it is periodic (stripes / checkers), and how many bins that takes.
PERIODIC_MIN_PEAK_SHARE = 0.55
PERIODIC_PEAK_BINS = 8
# Background: the texture band, in cycles per image side. Below it is shading, above it pixel
# noise; the world's textures repeat 8-16 times per side (noise: lattices of 8-32 cells).
MIN_TEXTURE_CYCLES = 3
MAX_TEXTURE_CYCLES = 24
# Background: with less of the image than this grey and clear of objects, it is not judged ("").
MIN_BACKGROUND_SHARE = 0.05
# Background: pixels this far (fraction of the side) from any coloured region of object size are
# background.
BACKGROUND_MARGIN = 0.03


@dataclass(frozen=True)
class ShapeCheck:
    """How one expected shape fared. ``size_ok`` is an addition to the original contract (last,
    with a default, so positional construction still works): a wrong size must fail too."""

    shape: Shape
    found: bool
    kind_ok: bool
    position_ok: bool
    color_ok: bool
    size_ok: bool = True

    @property
    def ok(self) -> bool:
        return self.found and self.kind_ok and self.position_ok and self.color_ok and self.size_ok


@dataclass(frozen=True)
class SceneCheck:
    """Verdict on an image against a scene. ``background`` is the background the image shows
    (one of ``BACKGROUNDS``) and ``background_ok`` whether it is the scene's; both are additions
    to the original contract, with defaults, so positional construction still works."""

    shapes: tuple[ShapeCheck, ...]
    extra_objects: int
    background_ok: bool = True
    background: str = ""

    @property
    def correct(self) -> bool:
        """Every shape ok, no extra object, the right background."""
        return all(check.ok for check in self.shapes) and self.extra_objects == 0 and self.background_ok

    @property
    def score(self) -> float:
        """Share of the expected shapes that are ok."""
        return sum(check.ok for check in self.shapes) / len(self.shapes) if self.shapes else 1.0


@dataclass(frozen=True)
class _Object:
    """One object seen in the image."""

    color: str
    kind: str
    size: str
    position: str | None  # None: not near any anchor
    area: int
    box: tuple[int, int, int, int]  # rows r0:r1, columns c0:c1

    def agreement(self, shape: Shape) -> int:
        return (self.color == shape.color) + (self.kind == shape.kind) + (self.size == shape.size)


def _as_rgb(image: Any) -> np.ndarray:
    """Float (H, W, 3) RGB in [0, 1] from a uint8 / float array or a PIL image, block-averaged by an
    integer factor when at least twice ``WORK_SIDE``."""
    if hasattr(image, "convert"):  # PIL
        image = image.convert("RGB")
    array = np.asarray(image)
    array = array.astype(np.float32) / 255 if array.dtype == np.uint8 else array.astype(np.float32)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {array.shape}")
    array = np.clip(array[..., :3], 0.0, 1.0)
    factor = min(array.shape[:2]) // WORK_SIDE
    if factor >= 2:  # block means: same picture, fewer pixels (thresholds are all relative)
        height, width = array.shape[0] // factor, array.shape[1] // factor
        blocks = array[: height * factor, : width * factor].reshape(height, factor, width, factor, 3)
        array = blocks.mean(axis=(1, 3))
    return array


def _upsampled(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` bilinearly upsampled by an integer factor to a side of at least ``MIN_WORK_SIDE``:
    smoother outlines for shapes only a few pixels wide (not used for textures, which it blurs)."""
    factor = -(-MIN_WORK_SIDE // min(rgb.shape[:2]))  # ceiling division
    if factor < 2:
        return rgb
    zoomed = ndimage.zoom(rgb, (factor, factor, 1), order=1, mode="nearest", grid_mode=True)
    return np.clip(zoomed, 0.0, 1.0)


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue angle (radians) in the opponent-colour plane: (r - (g + b) / 2, (g - b) * sqrt(3) / 2).

    Close to HSV hue, cheaper, and, like it, unchanged by blending with grey (adding the same value
    to every channel, or scaling them all, leaves the angle alone)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.arctan2((g - b) * np.sqrt(3) / 2, r - (g + b) / 2)


_PALETTE_NAMES = tuple(COLORS)
_PALETTE_HUES = _hue(np.array([COLORS[name] for name in _PALETTE_NAMES], dtype=np.float64))


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """Max minus min channel: 0 for greys, the palette's colours have 0.58-0.75."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)


def _color_labels(rgb: np.ndarray, chroma: np.ndarray) -> np.ndarray:
    """Int (H, W): index into ``_PALETTE_NAMES`` of each coloured pixel, -1 for grey pixels."""
    colored = chroma >= MIN_CHROMA
    distance = np.abs(_hue(rgb[colored])[:, None] - _PALETTE_HUES)
    distance = np.minimum(distance, 2 * np.pi - distance)  # hue is circular
    labels = np.full(chroma.shape, -1)
    labels[colored] = np.argmin(distance, axis=1)
    return labels


def _kind(coverage: np.ndarray) -> str:
    """Kind of a shape from the moments of its coverage map (pixel weights in [0, 1]).

    A triangle (pointing up) has its mass low: the skewness of its rows is -0.57 where circles
    and squares have 0. A square's fourth cumulant along its diagonals is half that along its
    axes; a circle's is the same in every direction. Blur convolves the map with a Gaussian,
    which adds its own cumulants, and a Gaussian's fourth cumulant is 0: the ratio survives
    blurring, and soft weights keep small shapes from being read pixel by pixel.
    """
    rows, cols = np.indices(coverage.shape)
    weights = coverage / coverage.sum()
    y, x = rows - (weights * rows).sum(), cols - (weights * cols).sum()

    def moment(u: np.ndarray, order: int) -> float:
        return float((weights * u**order).sum())

    if moment(y, 3) < TRIANGLE_MAX_SKEW * moment(y, 2) ** 1.5:
        return "triangle"

    def cumulant4(u: np.ndarray) -> float:
        return moment(u, 4) - 3 * moment(u, 2) ** 2

    axes = cumulant4(x) + cumulant4(y)  # negative for any flat-topped blob
    diagonals = cumulant4((x + y) / np.sqrt(2)) + cumulant4((x - y) / np.sqrt(2))
    ratio = diagonals / axes if axes < 0 else 1.0
    return "square" if ratio < SQUARE_MAX_CUMULANT_RATIO else "circle"


def _position(centre: tuple[float, float]) -> str | None:
    x, y = centre
    name, (ax, ay) = min(ANCHORS.items(), key=lambda item: (item[1][0] - x) ** 2 + (item[1][1] - y) ** 2)
    return name if np.hypot(ax - x, ay - y) <= POSITION_TOLERANCE else None


def _padded(box: tuple[slice, slice], shape: tuple[int, int]) -> tuple[slice, slice]:
    """``box`` grown by one pixel on every side, within the image."""
    return tuple(slice(max(0, b.start - 1), min(n, b.stop + 1)) for b, n in zip(box, shape, strict=True))


def _measure(component: np.ndarray, chroma: np.ndarray) -> tuple[str, tuple[int, int, int, int]]:
    """Kind and outline box (r0, r1, c0, c1) of one component (a crop with a pixel of margin).

    Chroma over the component's typical chroma estimates how much of each pixel the shape
    covers. The kind is read from that coverage (the component and a pixel around it, catching
    blurred edges); the box from the pixels covered by half or more, filled, which is where the
    outline of a blurred shape lies.
    """
    typical = np.percentile(chroma[component], CORE_REFERENCE_PERCENTILE)
    coverage = np.clip(chroma / typical, 0.0, 1.0)
    kind = _kind(np.where(ndimage.binary_dilation(component), coverage, 0.0))
    core = ndimage.binary_fill_holes(component & (coverage >= CORE_COVERAGE))
    rows, cols = np.nonzero(core)
    return kind, (int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)


def _objects(labels: np.ndarray, chroma: np.ndarray) -> list[_Object]:
    """Significant objects, largest first, fragments merged away (see the module docstring)."""
    height, width = labels.shape
    side = np.sqrt(height * width)
    min_area = MIN_OBJECT_AREA * height * width
    found: list[_Object] = []
    for index, color in enumerate(_PALETTE_NAMES):
        components, _ = ndimage.label(labels == index, structure=np.ones((3, 3), bool))
        boxes = ndimage.find_objects(components)
        areas = np.bincount(components.ravel())
        for number in np.flatnonzero(areas >= min_area):  # cheap pre-filter: noise makes many specks
            if number == 0:  # not this colour
                continue
            crop = _padded(boxes[number - 1], labels.shape)
            kind, (r0, r1, c0, c1) = _measure(components[crop] == number, chroma[crop])
            r0, r1, c0, c1 = r0 + crop[0].start, r1 + crop[0].start, c0 + crop[1].start, c1 + crop[1].start
            centre = ((c0 + c1) / 2 / width, (r0 + r1) / 2 / height)
            extent = ((r1 - r0) + (c1 - c0)) / 2 / side
            size = "large" if extent >= SIZE_THRESHOLD else "small"
            found.append(_Object(color, kind, size, _position(centre), int(areas[number]), (r0, r1, c0, c1)))
    found.sort(key=lambda obj: -obj.area)
    kept: list[_Object] = []
    for obj in found:
        r, c = (obj.box[0] + obj.box[1]) / 2, (obj.box[2] + obj.box[3]) / 2
        if not any(k.box[0] <= r < k.box[1] and k.box[2] <= c < k.box[3] for k in kept):
            kept.append(obj)
    return kept


def _detrended(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``values`` minus their least-squares plane in (row, column): lighting gradients are not texture."""
    design = np.stack([np.ones_like(values), rows, cols], axis=1)
    coefficients = np.linalg.solve(design.T @ design, design.T @ values)  # normal equations: 3 x 3
    return values - design @ coefficients


def _significant(mask: np.ndarray) -> np.ndarray:
    """``mask`` without its components smaller than ``MIN_OBJECT_AREA`` (colour noise specks)."""
    components, _ = ndimage.label(mask, structure=np.ones((3, 3), bool))
    areas = np.bincount(components.ravel())
    keep = areas >= MIN_OBJECT_AREA * mask.size
    keep[0] = False
    return keep[components]


def _background(rgb: np.ndarray) -> str:
    """Which of ``BACKGROUNDS`` the grey pixels away from objects show ("" when too few are left).

    Works on the background's texture band (``MIN_TEXTURE_CYCLES`` to ``MAX_TEXTURE_CYCLES`` cycles
    per side): slower changes are shading, faster ones pixel noise.
    """
    height, width = rgb.shape[:2]
    side = np.sqrt(height * width)
    objects = _significant(_chroma(rgb) >= MIN_CHROMA)
    near_object = ndimage.binary_dilation(objects, iterations=max(1, round(BACKGROUND_MARGIN * side)))
    rows, cols = np.nonzero(~near_object)
    if len(rows) < MIN_BACKGROUND_SHARE * height * width:
        return ""  # too little to judge by
    texture = np.zeros((height, width))
    # Objects blanked to the mean (0 after detrending).
    texture[rows, cols] = _detrended(rgb.mean(axis=-1)[rows, cols], rows / side, cols / side)
    power = np.abs(np.fft.rfft2(texture)) ** 2  # half the spectrum: the other half mirrors it
    fy = np.abs(np.fft.fftfreq(height, 1 / height))[:, None]  # cycles per image
    fx = np.fft.rfftfreq(width, 1 / width)[None, :]
    cycles = np.hypot(fy, fx)
    power[(cycles < MIN_TEXTURE_CYCLES) | (cycles > MAX_TEXTURE_CYCLES)] = 0.0
    # Parseval: the texture band's variance over the background pixels (x2 for the mirrored half).
    if np.sqrt(2 * power.sum() / (height * width * len(rows))) < PLAIN_MAX_STD:
        return "plain"
    flat = power.ravel()
    peaks = np.argpartition(flat, -PERIODIC_PEAK_BINS)[-PERIODIC_PEAK_BINS:]
    if flat[peaks].sum() < PERIODIC_MIN_PEAK_SHARE * flat.sum():
        return "noise"
    py, px = np.unravel_index(peaks[np.argmax(flat[peaks])], power.shape)
    return "stripes" if py == 0 or px == 0 else "checkers"


def _claim(shape: Shape, objects: list[_Object], claimed: set[int]) -> int | None:
    """Index of the object ``shape`` claims: the best-agreeing unclaimed one at its anchor, else an
    unclaimed one of its colour and kind elsewhere, else None."""
    free = [i for i in range(len(objects)) if i not in claimed]
    here = [i for i in free if objects[i].position == shape.position]
    if here:
        return max(here, key=lambda i: objects[i].agreement(shape))
    elsewhere = [i for i in free if objects[i].color == shape.color and objects[i].kind == shape.kind]
    return elsewhere[0] if elsewhere else None


def check_scene(image: Any, scene: Scene) -> SceneCheck:
    """Judge whether ``image`` (uint8 or float [0, 1] (H, W, 3) array, or PIL image; side >= 32)
    shows ``scene``: each shape found with the right kind, colour, size and position, no extra
    object, the right background."""
    rgb = _as_rgb(image)
    work = _upsampled(rgb)
    chroma = _chroma(work)
    objects = _objects(_color_labels(work, chroma), chroma)
    # Shapes with an object at their anchor claim first, so a misplaced shape searching elsewhere
    # cannot take another shape's object.
    occupied = {obj.position for obj in objects}
    order = sorted(range(len(scene.shapes)), key=lambda i: scene.shapes[i].position not in occupied)
    claimed: set[int] = set()
    checks: dict[int, ShapeCheck] = {}
    for i in order:
        shape = scene.shapes[i]
        index = _claim(shape, objects, claimed)
        if index is None:
            checks[i] = ShapeCheck(shape, False, False, False, False, False)
            continue
        claimed.add(index)
        obj = objects[index]
        checks[i] = ShapeCheck(
            shape,
            found=True,
            kind_ok=obj.kind == shape.kind,
            position_ok=obj.position == shape.position,
            color_ok=obj.color == shape.color,
            size_ok=obj.size == shape.size,
        )
    background = _background(rgb)
    return SceneCheck(
        shapes=tuple(checks[i] for i in range(len(scene.shapes))),
        extra_objects=len(objects) - len(claimed),
        background_ok=background == scene.background,
        background=background,
    )


def check_edit(image: Any, pair: EditPair) -> bool:
    """Whether ``image`` shows ``pair.target``, i.e. the edit was carried out (and nothing else changed
    that the checker can see)."""
    return check_scene(image, pair.target).correct
