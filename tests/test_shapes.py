"""The shapes world (scenes, captions, edits, renders) and its offline checker."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from ditaccel.shapes import (
    BACKGROUNDS,
    COLORS,
    EDIT_KINDS,
    KINDS,
    POSITION_PHRASES,
    POSITIONS,
    SIZES,
    EditPair,
    Scene,
    Shape,
    background_image,
    check_edit,
    check_scene,
    default_edit_set,
    default_t2i_set,
    edit_mask,
    render,
    sample_edit,
    sample_scene,
    shape_coverage,
    vocabulary,
    words,
)

CHECKED_SIZES = (64, 128, 256)
SCENES_PER_SIZE = 100
MIN_ACCURACY = 0.95  # share of true renders the checker must accept
MAX_FALSE_ACCEPT = 0.05  # share of wrong specs / noise images it may accept
BLUR_SIGMA_AT_128 = 1.0  # mild blur, scaled with the image size
NOISE_IMAGES = 40


def _degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A render made a bit like a generated image: blurred, channel gains / offsets, pixel noise."""
    sigma = BLUR_SIGMA_AT_128 * image.shape[0] / 128
    out = ndimage.gaussian_filter(image / 255.0, (sigma, sigma, 0))
    out = out * rng.uniform(0.93, 1.07, 3) + rng.uniform(-0.04, 0.04, 3)
    return np.clip(out + rng.normal(0, 0.015, out.shape), 0.0, 1.0)


def _other(rng: np.random.Generator, options, current):
    options = [option for option in options if option != current]
    return options[int(rng.integers(len(options)))]


def _wrong_spec(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with one attribute of one shape changed, or one shape added or removed."""
    changes = ["kind", "color", "size", "position"]
    changes += ["add"] if len(scene.shapes) < 3 else []
    changes += ["remove"] if len(scene.shapes) > 1 else []
    change = changes[int(rng.integers(len(changes)))]
    index = int(rng.integers(len(scene.shapes)))
    shapes = list(scene.shapes)
    if change == "add":
        shapes.append(Shape("circle", "red", "small", scene.free_positions[0]))
    elif change == "remove":
        del shapes[index]
    else:
        options = {"kind": KINDS, "color": COLORS, "size": SIZES, "position": scene.free_positions}[change]
        value = _other(rng, options, getattr(shapes[index], change))
        shapes[index] = replace(shapes[index], **{change: value})
    return replace(scene, shapes=tuple(shapes))


def _apply(instruction: str, source: Scene) -> Scene:
    """An independent reading of an instruction: the scene it asks for (fails if ambiguous)."""
    tokens = words(instruction)
    if tokens[:4] == ["change", "the", "background", "to"]:
        return replace(source, background=tokens[4])
    if tokens[0] == "add":
        size, color, kind = tokens[2:5]
        position = next(p for p, phrase in POSITION_PHRASES.items() if words(phrase) == tokens[5:])
        return replace(source, shapes=(*source.shapes, Shape(kind, color, size, position)))
    named = tokens[2:-1] if tokens[0] == "make" else tokens[2:]  # [color] kind
    matches = [s for s in source.shapes if [s.color, s.kind][-len(named) :] == named]
    assert len(matches) == 1, f"{instruction!r} is ambiguous in {source.caption()!r}"
    (shape,) = matches
    if tokens[0] == "remove":
        return replace(source, shapes=tuple(s for s in source.shapes if s is not shape))
    assert tokens[0] == "make"
    return replace(
        source, shapes=tuple(replace(s, color=tokens[-1]) if s is shape else s for s in source.shapes)
    )


scenes = st.builds(
    lambda shapes, background: Scene(tuple(shapes), background),
    st.lists(
        st.builds(
            Shape,
            st.sampled_from(KINDS),
            st.sampled_from(list(COLORS)),
            st.sampled_from(SIZES),
            st.sampled_from(POSITIONS),
        ),
        min_size=1,
        max_size=3,
        unique_by=lambda shape: shape.position,
    ),
    st.sampled_from(BACKGROUNDS),
)


# --- the world --------------------------------------------------------------------------------


def test_sampling_and_rendering_are_deterministic():
    def draw(seed: int) -> list[Scene]:
        rng = np.random.default_rng(seed)
        return [sample_scene(rng) for _ in range(5)]

    assert draw(7) == draw(7) != draw(8)
    for first, again in zip(draw(7), draw(7), strict=True):
        assert render(first, 64).tobytes() == render(again, 64).tobytes()
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert [sample_edit(a) for _ in range(5)] == [sample_edit(b) for _ in range(5)]


def test_default_sets_are_fixed_and_prefixes():
    assert default_t2i_set() == default_t2i_set()
    assert default_edit_set() == default_edit_set()
    assert default_t2i_set(4) == default_t2i_set(8)[:4]
    assert default_edit_set(5) == default_edit_set(12)[:5]
    assert len({seed for _, seed in default_t2i_set(16)}) == 16
    # Pinned, so a change to sampling or to the set construction is noticed (it would silently
    # change every benchmark number).
    scene, seed = default_t2i_set()[0]
    assert (scene.caption(), seed) == (
        "a large red triangle at the bottom, a small purple circle in the centre and a small yellow "
        "circle on the right, plain background",
        1000,
    )
    pair, seed = default_edit_set()[0]
    assert (pair.source.caption(), pair.instruction, seed) == (
        "a large purple triangle in the centre, a small red circle on the right and a small red "
        "triangle at the top, plain background",
        "make the circle blue",
        2000,
    )


def test_default_sets_are_varied():
    t2i = [scene for scene, _ in default_t2i_set()]
    shapes = [shape for scene in t2i for shape in scene.shapes]
    assert {s.kind for s in shapes} == set(KINDS)
    assert {s.color for s in shapes} == set(COLORS)
    assert {s.size for s in shapes} == set(SIZES)
    assert {s.position for s in shapes} == set(POSITIONS)
    assert {scene.background for scene in t2i} == set(BACKGROUNDS)
    assert {len(scene.shapes) for scene in t2i} == {1, 2, 3}
    edits = [pair for pair, _ in default_edit_set()]
    assert [pair.kind for pair in edits] == list(EDIT_KINDS) * 2
    edit_shapes = [shape for pair in edits for scene in (pair.source, pair.target) for shape in scene.shapes]
    assert {s.kind for s in edit_shapes} == set(KINDS)
    assert {s.color for s in edit_shapes} == set(COLORS)
    assert {s.position for s in edit_shapes} == set(POSITIONS)
    assert {scene.background for pair in edits for scene in (pair.source, pair.target)} == set(BACKGROUNDS)


def test_invalid_shapes_and_scenes_are_refused():
    circle = Shape("circle", "red", "small", "left")
    with pytest.raises(ValueError):
        Shape("hexagon", "red", "small", "left")
    with pytest.raises(ValueError):
        Shape("circle", "pink", "small", "left")
    with pytest.raises(ValueError):
        Scene((), "plain")
    with pytest.raises(ValueError):
        Scene((circle, replace(circle, kind="square")), "plain")  # same position
    with pytest.raises(ValueError):
        Scene((circle,), "wallpaper")
    with pytest.raises(ValueError):
        render(Scene((circle,), "plain"), size=16)


def test_caption_reads_in_order():
    scene = Scene(
        (Shape("circle", "red", "small", "left"), Shape("square", "blue", "large", "top")), "stripes"
    )
    assert (
        scene.caption()
        == "a small red circle on the left and a large blue square at the top, striped background"
    )
    assert words("A red Circle, plain background.") == ["a", "red", "circle", "plain", "background"]


@pytest.mark.parametrize("size", [33, 64, 100, 128, 256])
def test_render_shape_and_dtype(size):
    image = render(sample_scene(np.random.default_rng(size)), size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8


def test_shapes_never_overlap():
    """Every pair of shapes at different positions, in every kind and size, leaves a gap of at
    least 2 px at 64 px (so blur does not merge them either)."""
    size, gap = 64, 2
    shapes = [Shape(kind, "red", s, p) for kind in KINDS for s in SIZES for p in POSITIONS]
    footprints = {shape: shape_coverage(shape, size) > 0 for shape in shapes}
    for one, a in footprints.items():
        grown = ndimage.binary_dilation(a, iterations=gap)
        for other, b in footprints.items():
            if one.position != other.position:
                assert not (grown & b).any(), (one, other)


def test_texture_looks_the_same_at_every_size():
    scene = Scene((Shape("circle", "red", "small", "left"),), "noise")
    big = render(scene, 256).astype(float)
    small = render(scene, 64).astype(float)
    shrunk = big.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3))
    assert np.abs(shrunk - small).mean() < 8  # grey levels out of 255


def test_captions_and_instructions_use_the_vocabulary():
    vocab = vocabulary()
    assert vocab == sorted(set(vocab))
    rng = np.random.default_rng(0)
    used = set()
    for _ in range(400):
        pair = sample_edit(rng)
        for text in (pair.source.caption(), pair.target.caption(), pair.instruction):
            used |= set(words(text))
    assert used <= set(vocab)
    assert used == set(vocab)  # and the vocabulary lists nothing that never occurs


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**63), size=st.integers(32, 96))
def test_any_sampled_scene_round_trips_through_words(seed, size):
    scene = sample_scene(np.random.default_rng(seed))
    tokens = words(scene.caption())
    assert set(tokens) <= set(vocabulary())
    assert " ".join(tokens) == scene.caption().replace(",", "")
    image = render(scene, size)
    assert image.shape == (size, size, 3) and image.dtype == np.uint8


@settings(max_examples=40, deadline=None)
@given(scene=scenes, size=st.integers(32, 160))
def test_checker_accepts_the_render_of_any_scene(scene, size):
    assert check_scene(render(scene, size), scene).correct


# --- edits ------------------------------------------------------------------------------------


def test_edits_change_only_what_the_instruction_says():
    rng = np.random.default_rng(1)
    pairs = [sample_edit(rng, kind) for kind in EDIT_KINDS for _ in range(50)]
    pairs += [pair for pair, _ in default_edit_set()]
    for pair in pairs:
        assert _apply(pair.instruction, pair.source) == pair.target, pair
        assert pair.source != pair.target
        if pair.kind != "background":  # the background is untouched, pixel for pixel
            assert (
                background_image(pair.source.background, 64) == background_image(pair.target.background, 64)
            ).all()
        if pair.kind == "remove":
            assert len(pair.source.shapes) >= 2


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_edit_mask_covers_the_change(kind):
    rng = np.random.default_rng(2)
    for _ in range(10):
        pair = sample_edit(rng, kind)
        size = 96
        mask = edit_mask(pair, size)
        source, target = render(pair.source, size), render(pair.target, size)
        changed = np.any(source != target, axis=2)
        assert mask.shape == (size, size) and mask.dtype == bool
        assert mask.any() and not mask.all()
        assert mask[changed].all()
        if kind == "background":
            inside = sum(shape_coverage(shape, size) for shape in pair.source.shapes)
            assert mask[inside < 1].all()
        else:
            assert mask.mean() < 0.2


def test_edit_pair_refuses_unknown_kind():
    scene = sample_scene(np.random.default_rng(0))
    with pytest.raises(ValueError):
        EditPair(scene, "do something", scene, "rotate")


# --- the checker ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", CHECKED_SIZES)
def test_checker_accepts_renders_and_rejects_wrong_specs(size):
    rng = np.random.default_rng(size)
    clean = degraded = wrong = 0
    for _ in range(SCENES_PER_SIZE):
        scene = sample_scene(rng)
        image = render(scene, size)
        clean += check_scene(image, scene).correct
        degraded += check_scene(_degrade(image, rng), scene).correct
        wrong += check_scene(image, _wrong_spec(scene, rng)).correct
    n = SCENES_PER_SIZE
    summary = (
        f"size {size}: clean {clean / n:.2f}, blurred {degraded / n:.2f}, wrong accepted {wrong / n:.2f}"
    )
    assert clean >= MIN_ACCURACY * n, summary
    assert degraded >= MIN_ACCURACY * n, summary
    assert wrong <= MAX_FALSE_ACCEPT * n, summary


@pytest.mark.parametrize("size", [64, 128])
def test_checker_rejects_noise_images(size):
    rng = np.random.default_rng(size + 1)
    accepted = 0
    for _ in range(NOISE_IMAGES):
        scene = sample_scene(rng)
        pixel_noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        blobs = ndimage.gaussian_filter(rng.random((size, size, 3)), (size / 16, size / 16, 0))
        blobs = (blobs - blobs.min()) / (blobs.max() - blobs.min())  # smooth colour blobs
        accepted += check_scene(pixel_noise, scene).correct + check_scene(blobs, scene).correct
    assert accepted <= MAX_FALSE_ACCEPT * 2 * NOISE_IMAGES


def test_checker_reports_what_is_wrong():
    scene = Scene(
        (Shape("circle", "red", "large", "left"), Shape("square", "blue", "small", "top")), "checkers"
    )
    image = render(scene)
    ok = check_scene(image, scene)
    assert ok.correct and ok.score == 1.0 and ok.extra_objects == 0 and ok.background == "checkers"

    wrong_kind = check_scene(
        image, replace(scene, shapes=(replace(scene.shapes[0], kind="square"), scene.shapes[1]))
    )
    first = wrong_kind.shapes[0]
    assert first.found and first.color_ok and first.position_ok and first.size_ok and not first.kind_ok
    assert wrong_kind.score == 0.5 and not wrong_kind.correct

    moved = check_scene(
        image, replace(scene, shapes=(replace(scene.shapes[0], position="right"), scene.shapes[1]))
    )
    assert moved.shapes[0].found and not moved.shapes[0].position_ok

    fewer = check_scene(image, replace(scene, shapes=scene.shapes[:1]))
    assert fewer.extra_objects == 1 and not fewer.correct

    assert not check_scene(image, replace(scene, background="stripes")).background_ok


def test_checker_accepts_pil_float_and_small_images():
    scene = Scene((Shape("triangle", "green", "large", "centre"),), "noise")
    image = render(scene, 128)
    assert check_scene(Image.fromarray(image), scene).correct
    assert check_scene(image / 255.0, scene).correct
    assert check_scene(render(scene, 32), scene).correct


def test_check_edit_tells_target_from_source():
    rng = np.random.default_rng(4)
    pairs = [pair for pair, _ in default_edit_set()] + [
        sample_edit(rng, kind) for kind in EDIT_KINDS for _ in range(8)
    ]
    for pair in pairs:
        source, target = render(pair.source), render(pair.target)
        assert check_edit(target, pair), pair
        assert not check_edit(source, pair), pair
        if pair.kind != "background":
            assert not check_scene(source, pair.target).correct, pair


def test_a_caption_determines_the_picture():
    """Scenes are sampled with the first world's texture draw kept, yet two scenes with one caption
    render to the same pixels, and every background kind is one picture, the same at any size."""
    rng = np.random.default_rng(11)
    by_caption: dict[str, np.ndarray] = {}
    for _ in range(300):
        scene = sample_scene(rng)
        image = render(scene, 64)
        if scene.caption() in by_caption:
            assert (by_caption[scene.caption()] == image).all()
        by_caption[scene.caption()] = image
    for background in BACKGROUNDS:
        big, small = background_image(background, 256), background_image(background, 64)
        assert np.abs(big.reshape(64, 4, 64, 4).mean(axis=(1, 3)) - small).mean() < 8 / 255
    assert len({background_image(b, 64).tobytes() for b in BACKGROUNDS}) == len(BACKGROUNDS)


def test_seeded_sets_keep_their_scenes():
    """The bench sets are the first world's scenes (the texture draw is kept in the stream)."""
    captions = [scene.caption() for scene, _ in default_t2i_set(3)]
    assert captions == [
        "a large red triangle at the bottom, a small purple circle in the centre and a small yellow circle on the right, plain background",
        "a large yellow square on the left, a large green triangle in the centre and a small blue triangle at the top, striped background",
        "a large green triangle at the top, checkered background",
    ]
