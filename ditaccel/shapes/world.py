"""The shapes world: scenes of 1-3 flat coloured shapes on a grey background, their captions,
instruction edits and renders.

It exists to train a small text-to-image / instruction-editing diffusion model and to judge its
outputs offline (:mod:`ditaccel.shapes.checker`), so everything is deterministic given seeds and
the world is built to be easy to learn and to check. A scene's picture is a function of its
caption: each background kind is one fixed picture (one grey, vertical stripes and checkers
anchored to the image, one fixed noise pattern), since a denoiser cannot be told a random texture
phase or grey level and paints their mean grey instead (measured on the v2 world: stripes 1/9,
checkers 1/6 held out while plain was 9/9). Further, shapes sit at five fixed anchors and never overlap,
object colours are saturated and well separated in hue while backgrounds are grey (chroma tells
objects from background), and every caption / instruction uses a small closed vocabulary.

Geometry is in fractions of the image side, (x, y) with y pointing down, so a scene looks the
same at any render size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
from scipy import ndimage

from . import raster

KINDS = raster.SHAPE_KINDS
COLORS: dict[str, tuple[int, int, int]] = {
    # Saturated, HSV hues about 0, 51, 132, 224 and 282 degrees: at least 50 degrees apart.
    "red": (220, 40, 40),
    "green": (30, 180, 60),
    "blue": (40, 90, 225),
    "yellow": (235, 205, 30),
    "purple": (160, 40, 210),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "centre")
BACKGROUNDS = ("plain", "stripes", "checkers", "noise")
EDIT_KINDS = ("recolor", "remove", "add", "background")

# Shape centres, (x, y) as fractions of the side. Neighbouring anchors are 0.3 apart on some
# axis, so two large shapes (0.25 across) leave a gap of at least 0.05 of the side.
ANCHORS: dict[str, tuple[float, float]] = {
    "left": (0.2, 0.5),
    "right": (0.8, 0.5),
    "top": (0.5, 0.2),
    "bottom": (0.5, 0.8),
    "centre": (0.5, 0.5),
}
# Half the side of a shape's bounding box, as a fraction of the image side.
HALF_EXTENTS: dict[str, float] = {"small": 0.08, "large": 0.125}

POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "centre": "in the centre",
}
BACKGROUND_PHRASES = {
    "plain": "plain background",
    "stripes": "striped background",
    "checkers": "checkered background",
    "noise": "noisy background",
}

MIN_SHAPES, MAX_SHAPES = 1, 3
SHAPE_COUNT_WEIGHTS = (0.4, 0.4, 0.2)  # chance of 1, 2, 3 shapes
# The first shapes world drew a texture seed per scene (grey levels, stripe direction, noise);
# sample_scene still draws it and throws it away, so seeded scene streams (the bench sets, the
# held-out scenes) hold the same scenes and captions as before.
TEXTURE_SEEDS = 2**16
MIN_RENDER_SIZE = 32

# Background greys (fractions of white), one per background kind. Mid greys keep every object
# colour far from the background in chroma and clear of it in lightness.
PLAIN_GREY = 0.5
TWO_TONE_GREYS = (0.35, 0.6)  # (dark, light) for stripes (vertical) and checkers
NOISE_GREYS = (0.25, 0.75)  # (low, high) of the noise texture
NOISE_SEED = 0  # the one noise pattern every noisy background shows

EDIT_MASK_DILATION = 1 / 64  # edit_mask grows the changed region by this share of the side (>= 1 px)

# Fixed benchmark sets: each item is the best-covering of DEFAULT_SET_CANDIDATES fresh samples.
DEFAULT_T2I_SEED = 20240601
DEFAULT_EDIT_SEED = 20240602
DEFAULT_SET_CANDIDATES = 32
T2I_GENERATION_SEED_BASE = 1000  # item i generates with seed BASE + i
EDIT_GENERATION_SEED_BASE = 2000
PUNCTUATION = re.compile(r"[,.;:!?]")


def _check_choice(name: str, value: object, allowed: tuple[str, ...] | dict) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(allowed)}")


@dataclass(frozen=True)
class Shape:
    """One object: what it is, its colour, size and where it sits."""

    kind: str
    color: str
    size: str
    position: str

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, KINDS)
        _check_choice("color", self.color, COLORS)
        _check_choice("size", self.size, SIZES)
        _check_choice("position", self.position, POSITIONS)

    def phrase(self) -> str:
        """E.g. "a small red circle on the left"."""
        return f"a {self.size} {self.color} {self.kind} {POSITION_PHRASES[self.position]}"


@dataclass(frozen=True)
class Scene:
    """1-3 shapes at distinct positions on one of the fixed backgrounds; a scene always renders to
    the same pixels, and two scenes with the same caption to the same picture."""

    shapes: tuple[Shape, ...]
    background: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", tuple(self.shapes))
        if not MIN_SHAPES <= len(self.shapes) <= MAX_SHAPES:
            raise ValueError(f"a scene holds {MIN_SHAPES}-{MAX_SHAPES} shapes, got {len(self.shapes)}")
        if not all(isinstance(shape, Shape) for shape in self.shapes):
            raise TypeError("Scene.shapes must hold Shape objects")
        positions = [shape.position for shape in self.shapes]
        if len(set(positions)) != len(positions):
            raise ValueError(f"shapes must sit at distinct positions, got {positions}")
        _check_choice("background", self.background, BACKGROUNDS)

    def caption(self) -> str:
        """E.g. "a small red circle on the left and a large blue square at the top, striped background"."""
        phrases = [shape.phrase() for shape in self.shapes]
        objects = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
        return f"{objects}, {BACKGROUND_PHRASES[self.background]}"

    @property
    def free_positions(self) -> tuple[str, ...]:
        """Positions no shape occupies, in ``POSITIONS`` order."""
        taken = {shape.position for shape in self.shapes}
        return tuple(p for p in POSITIONS if p not in taken)


@dataclass(frozen=True)
class EditPair:
    """An instruction edit: ``target`` is ``source`` changed only as ``instruction`` says."""

    source: Scene
    instruction: str
    target: Scene
    kind: str

    def __post_init__(self) -> None:
        _check_choice("edit kind", self.kind, EDIT_KINDS)


# --- text -------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """The word normalisation of captions and instructions: lowercase, punctuation (, . ; : ! ?)
    dropped, split on whitespace. "A red circle, plain background" -> [a, red, circle, plain, background]."""
    return PUNCTUATION.sub(" ", text.lower()).split()


def _unique_by(shapes: tuple[Shape, ...], key: Callable[[Shape], object], shape: Shape) -> bool:
    return sum(key(other) == key(shape) for other in shapes) == 1


def _recolor_text(shape: Shape, color: str, name_color: bool) -> str:
    name = f"{shape.color} {shape.kind}" if name_color else shape.kind
    return f"make the {name} {color}"


def recolor_instruction(scene: Scene, shape: Shape, color: str) -> str:
    """ "make the circle green" when the kind alone names ``shape``, else "make the red circle green"."""
    return _recolor_text(shape, color, name_color=not _unique_by(scene.shapes, lambda s: s.kind, shape))


def remove_instruction(shape: Shape) -> str:
    return f"remove the {shape.color} {shape.kind}"


def add_instruction(shape: Shape) -> str:
    return f"add {shape.phrase()}"


def background_instruction(background: str) -> str:
    return f"change the background to {background}"


def _all_texts() -> Iterator[str]:
    """Every caption fragment and instruction the world can produce (for ``vocabulary``)."""
    every_shape = [Shape(k, c, s, p) for k in KINDS for c in COLORS for s in SIZES for p in POSITIONS]
    yield "and"  # joins the shape phrases of a caption
    yield from BACKGROUND_PHRASES.values()
    for shape in every_shape:
        yield shape.phrase()
        yield remove_instruction(shape)
        yield add_instruction(shape)
        for color in COLORS:
            yield _recolor_text(shape, color, name_color=False)
            yield _recolor_text(shape, color, name_color=True)
    for background in BACKGROUNDS:
        yield background_instruction(background)


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    return tuple(sorted({word for text in _all_texts() for word in words(text)}))


def vocabulary() -> list[str]:
    """Every word any caption or instruction can contain (after ``words``), sorted, no duplicates."""
    return list(_vocabulary())


# --- sampling ---------------------------------------------------------------------------------


def _pick(rng: np.random.Generator, options):
    """One element of a sequence, uniformly (plain Python value, not a numpy scalar)."""
    options = tuple(options)
    return options[int(rng.integers(len(options)))]


def _random_shape(rng: np.random.Generator, position: str) -> Shape:
    return Shape(_pick(rng, KINDS), _pick(rng, COLORS), _pick(rng, SIZES), position)


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random scene: 1-3 shapes (weights ``SHAPE_COUNT_WEIGHTS``) at distinct positions; kinds
    and colours may repeat."""
    count = MIN_SHAPES + int(rng.choice(len(SHAPE_COUNT_WEIGHTS), p=SHAPE_COUNT_WEIGHTS))
    positions = [POSITIONS[i] for i in rng.permutation(len(POSITIONS))[:count]]
    shapes = tuple(_random_shape(rng, position) for position in positions)
    background = _pick(rng, BACKGROUNDS)
    rng.integers(TEXTURE_SEEDS)  # the first world's texture seed: keeps seeded streams as they were
    return Scene(shapes, background)


def _edit_recolor(rng: np.random.Generator, scene: Scene) -> EditPair | None:
    nameable = [s for s in scene.shapes if _unique_by(scene.shapes, lambda o: (o.color, o.kind), s)]
    if not nameable:
        return None
    shape = _pick(rng, nameable)
    color = _pick(rng, [c for c in COLORS if c != shape.color])
    shapes = tuple(replace(s, color=color) if s is shape else s for s in scene.shapes)
    target = replace(scene, shapes=shapes)
    return EditPair(scene, recolor_instruction(scene, shape, color), target, "recolor")


def _edit_remove(rng: np.random.Generator, scene: Scene) -> EditPair | None:
    nameable = [s for s in scene.shapes if _unique_by(scene.shapes, lambda o: (o.color, o.kind), s)]
    if len(scene.shapes) < 2 or not nameable:
        return None
    shape = _pick(rng, nameable)
    target = replace(scene, shapes=tuple(s for s in scene.shapes if s is not shape))
    return EditPair(scene, remove_instruction(shape), target, "remove")


def _edit_add(rng: np.random.Generator, scene: Scene) -> EditPair | None:
    if len(scene.shapes) >= MAX_SHAPES:
        return None
    shape = _random_shape(rng, _pick(rng, scene.free_positions))
    target = replace(scene, shapes=(*scene.shapes, shape))
    return EditPair(scene, add_instruction(shape), target, "add")


def _edit_background(rng: np.random.Generator, scene: Scene) -> EditPair:
    background = _pick(rng, [b for b in BACKGROUNDS if b != scene.background])
    target = replace(scene, background=background)
    return EditPair(scene, background_instruction(background), target, "background")


_EDIT_BUILDERS = {
    "recolor": _edit_recolor,
    "remove": _edit_remove,
    "add": _edit_add,
    "background": _edit_background,
}


def sample_edit(rng: np.random.Generator, kind: str | None = None) -> EditPair:
    """A random edit of a random scene; ``kind`` (default: uniform over ``EDIT_KINDS``) fixes the
    edit kind. Scenes the edit cannot apply to unambiguously are redrawn."""
    if kind is None:
        kind = _pick(rng, EDIT_KINDS)
    _check_choice("edit kind", kind, EDIT_KINDS)
    while True:
        pair = _EDIT_BUILDERS[kind](rng, sample_scene(rng))
        if pair is not None:
            return pair


# --- fixed benchmark sets ---------------------------------------------------------------------


def _scene_features(scene: Scene) -> set[tuple[str, object]]:
    features: set[tuple[str, object]] = {("background", scene.background), ("count", len(scene.shapes))}
    for shape in scene.shapes:
        features |= {("kind", shape.kind), ("color", shape.color), ("size", shape.size)}
        features.add(("position", shape.position))
    return features


def _edit_features(pair: EditPair) -> set[tuple[str, object]]:
    return {("edit", pair.kind)} | _scene_features(pair.source) | _scene_features(pair.target)


def _covering_choice(draw: Callable[[], object], features: Callable[[object], set], seen: set) -> object:
    """The first of ``DEFAULT_SET_CANDIDATES`` fresh draws adding the most unseen features."""
    candidates = [draw() for _ in range(DEFAULT_SET_CANDIDATES)]
    best = max(candidates, key=lambda item: len(features(item) - seen))  # max keeps the first on ties
    seen |= features(best)
    return best


@lru_cache(maxsize=8)
def _default_t2i(count: int) -> tuple[tuple[Scene, int], ...]:
    rng, seen = np.random.default_rng(DEFAULT_T2I_SEED), set()
    scenes = [_covering_choice(lambda: sample_scene(rng), _scene_features, seen) for _ in range(count)]
    return tuple((scene, T2I_GENERATION_SEED_BASE + i) for i, scene in enumerate(scenes))


@lru_cache(maxsize=8)
def _default_edits(count: int) -> tuple[tuple[EditPair, int], ...]:
    rng, seen = np.random.default_rng(DEFAULT_EDIT_SEED), set()
    pairs = []
    for i in range(count):
        kind = EDIT_KINDS[i % len(EDIT_KINDS)]  # round-robin: every kind once count >= 4
        pairs.append(_covering_choice(lambda kind=kind: sample_edit(rng, kind), _edit_features, seen))
    return tuple((pair, EDIT_GENERATION_SEED_BASE + i) for i, pair in enumerate(pairs))


def default_t2i_set(count: int = 8) -> list[tuple[Scene, int]]:
    """Fixed text-to-image benchmark: ``count`` (scene, generation seed) pairs, the same on every
    call and machine. Scenes are chosen to cover kinds, colours, sizes, positions, backgrounds and
    shape counts early (8 cover them all); a shorter set is a prefix of a longer one."""
    return list(_default_t2i(count))


def default_edit_set(count: int = 8) -> list[tuple[EditPair, int]]:
    """Fixed editing benchmark: ``count`` (edit pair, generation seed) pairs, the same on every call
    and machine; edit kinds go round-robin (recolor, remove, add, background) and the scenes cover
    the world's attributes; a shorter set is a prefix of a longer one."""
    return list(_default_edits(count))


# --- rendering --------------------------------------------------------------------------------


def background_image(background: str, size: int) -> np.ndarray:
    """Grey (size, size) picture in [0, 1] of a background kind: the same picture (up to
    resolution) at every size, and the same for every scene of that kind."""
    _check_choice("background", background, BACKGROUNDS)
    if background == "plain":
        return np.full((size, size), PLAIN_GREY)
    if background == "noise":
        return raster.value_noise(size, NOISE_SEED, *NOISE_GREYS)
    if background == "stripes":
        return raster.stripes(size, *TWO_TONE_GREYS, vertical=True)
    return raster.checkers(size, *TWO_TONE_GREYS)


def shape_coverage(shape: Shape, size: int) -> np.ndarray:
    """Float (size, size) share of each pixel that ``shape`` covers."""
    return raster.coverage(shape.kind, ANCHORS[shape.position], HALF_EXTENTS[shape.size], size)


def _check_size(size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < MIN_RENDER_SIZE:
        raise ValueError(f"render size must be an int >= {MIN_RENDER_SIZE}, got {size!r}")


def render(scene: Scene, size: int = 128) -> np.ndarray:
    """The scene as a uint8 (size, size, 3) RGB image; deterministic, any ``size`` >= 32."""
    _check_size(size)
    size = int(size)
    image = np.repeat(background_image(scene.background, size)[..., None], 3, axis=2)
    for shape in scene.shapes:
        alpha = shape_coverage(shape, size)[..., None]
        image = image * (1 - alpha) + alpha * (np.asarray(COLORS[shape.color]) / 255.0)
    return np.round(image * 255).astype(np.uint8)


def edit_mask(pair: EditPair, size: int = 128) -> np.ndarray:
    """Bool (size, size): where the source and target renders differ, dilated by
    ``EDIT_MASK_DILATION`` of the side. For background edits it also covers all of the background
    (every pixel not fully inside a shape), even where the two textures happen to agree."""
    _check_size(size)
    changed = np.any(render(pair.source, size) != render(pair.target, size), axis=2)
    if pair.kind == "background":
        covered = sum(shape_coverage(shape, size) for shape in pair.source.shapes)
        changed |= covered < 1
    radius = max(1, round(size * EDIT_MASK_DILATION))
    return ndimage.binary_dilation(changed, structure=np.ones((3, 3), bool), iterations=radius)
