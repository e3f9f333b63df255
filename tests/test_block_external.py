"""``block-external``: exact at refresh=1, the served attention exact on frozen inputs (both modes,
every layout), external rows absent from cached steps, and every refusal before compute."""

import numpy as np
import pytest
import torch
from conftest import run, velocities

from ditaccel import AcceleratedPipeline
from ditaccel.attention.external import sequence_indices
from ditaccel.pipelines import TokenLayout
from ditaccel.testing import example_call

KONTEXT, QWEN_EDIT = "tiny-random-flux-kontext", "tiny-random-qwen-image-edit"
FLUX, SD3, QWEN = "tiny-random-flux", "tiny-random-sd3", "tiny-random-qwen-image"
CASES = [
    (KONTEXT, "reference"),
    (KONTEXT, "reference+text"),
    (QWEN_EDIT, "reference"),
    (QWEN_EDIT, "reference+text"),
    (FLUX, "text"),
    (SD3, "text"),
    (QWEN, "text"),
]
FROZEN = [0.7] * 8  # equal sigmas: every step sees the same latents at the same timestep


@pytest.mark.parametrize(("name", "external"), CASES)
def test_refresh_every_step_is_the_plain_pipeline(name, external, make_pipe):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=6)
    acc = AcceleratedPipeline.from_pipe(pipe, f"block-external:external={external},refresh=1")
    assert np.array_equal(run(acc, name, steps=6), plain)
    cached = AcceleratedPipeline.from_pipe(acc.remove(), f"block-external:external={external},refresh=3")
    assert not np.array_equal(run(cached, name, steps=6), plain)  # the cached steps did run


@pytest.mark.parametrize("mode", ["output", "kv"])
@pytest.mark.parametrize(("name", "external"), [c for c in CASES if c[0] != SD3])
def test_cached_steps_serve_the_full_attention_on_frozen_inputs(name, external, mode, make_pipe):
    """With every step's inputs equal, the cached external part is what full attention would
    compute: every cached step hands the loop the plain velocity. (SD3's pipeline takes no
    custom sigmas; its layout is covered by the index test and the refresh=1 test.)"""
    pipe = make_pipe(name)
    plain = velocities(pipe, name, steps=8, sigmas=FROZEN)
    acc = AcceleratedPipeline.from_pipe(pipe, f"block-external:external={external},refresh=4,mode={mode}")
    served = velocities(acc, name, steps=8, sigmas=FROZEN)
    assert len(served) == len(plain)
    for ours, theirs in zip(served, plain, strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


def test_external_rows_are_not_computed_on_cached_steps(make_pipe):
    """On cached steps the blocks see the generated tokens and the text only (Kontext), or the
    image stream only (text external); refresh steps see everything."""
    for external, expect in (("reference", "image_only"), ("text", "no_text")):
        pipe = make_pipe(KONTEXT)
        rows: list[tuple[int, int]] = []
        block = pipe.transformer.transformer_blocks[0]
        block.register_forward_pre_hook(
            lambda _m, _a, kw, rows=rows: rows.append(
                (kw["hidden_states"].shape[1], kw["encoder_hidden_states"].shape[1])
            ),
            with_kwargs=True,
        )
        acc = AcceleratedPipeline.from_pipe(
            pipe, f"block-external:external={external},refresh=3,warmup=1,final=1"
        )
        run(acc, KONTEXT, steps=6)
        full = rows[0]
        cached_steps = [1 <= s < 5 and s % 3 != 0 for s in range(6)]  # refresh at 0, 3 (and final 5)
        for step, (seen, cached) in enumerate(zip(rows, cached_steps, strict=True)):
            if not cached:
                assert seen == full, step
            elif expect == "image_only":
                assert seen == (full[0] // 2, full[1]), step
            else:
                assert seen == (full[0], 0), step


def test_sequence_indices_follow_the_layout():
    layout = TokenLayout(
        image=4, reference=4, text=3, text_in_sequence=True, grid=(1, 2, 2), reference_grid=(2, 2)
    )
    internal, external = sequence_indices(layout, 11, True, frozenset({"reference"}))
    assert external.tolist() == [7, 8, 9, 10] and internal.tolist() == list(range(7))
    internal, external = sequence_indices(layout, 11, False, frozenset({"text"}))  # SD3: text after image
    assert external.tolist() == [8, 9, 10]
    internal, external = sequence_indices(layout, 11, True, frozenset({"reference", "text"}), text_kept=1)
    assert internal.tolist() == [0, 3, 4, 5, 6] and external.tolist() == [1, 2, 7, 8, 9, 10]
    _, external = sequence_indices(layout, 8, True, frozenset({"text"}))  # image-only attention
    assert external.numel() == 0
    assert sequence_indices(layout, 5, True, frozenset({"text"})) is None  # cross-attention


@pytest.mark.parametrize("mode", ["output", "kv"])
def test_measure_records_the_error_against_full_attention(mode, make_pipe):
    """measure=true records, per layer and cached step, the error of the served attention against
    full attention with fresh external keys (0 on frozen inputs), and hands the generated tokens
    what the unmeasured method does."""
    pipe = make_pipe(KONTEXT)
    spec = f"block-external:refresh=3,warmup=1,final=1,mode={mode}"
    acc = AcceleratedPipeline.from_pipe(pipe, spec + ",measure=true")
    measured = run(acc, KONTEXT, steps=10)
    errors, drift = acc.stats.extra["external_error"], acc.stats.extra["external_drift"]
    sites = [site.name for site in acc.adapter.sequence_attention_sites(pipe.transformer)]
    assert set(errors) == set(drift) == set(sites)
    cached_steps = [s for s in range(10) if not acc.method("block-external").config.is_refresh(s, 10)]
    for values in errors.values():
        assert [step for step, _ in values] == cached_steps
        assert all(0 < error < 1 for _, error in values)
    plain_method = AcceleratedPipeline.from_pipe(acc.remove(), spec)
    np.testing.assert_allclose(run(plain_method, KONTEXT, steps=10), measured, atol=1e-5)
    frozen = AcceleratedPipeline.from_pipe(plain_method.remove(), spec + ",measure=true")
    run(frozen, KONTEXT, steps=10, sigmas=[0.7] * 10)
    assert all(e < 1e-5 for values in frozen.stats.extra["external_error"].values() for _, e in values)
    assert all(d < 1e-5 for d in frozen.stats.extra["external_drift"].values())


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        (FLUX, "block-external", "external=reference needs an in-context editing pipeline"),
        ("tiny-random-pixart", "block-external:external=text", "takes its text by cross-attention"),
        (KONTEXT, "block-external:refresh=0", "refresh must be in"),
        (KONTEXT, "block-external:mode=exact", "mode must be one of"),
        (KONTEXT, "block-external:external=image", "external must be one of"),
        (KONTEXT, "block-external+sparse-attention", "cannot be combined with sparse-attention"),
        (
            KONTEXT,
            "region-edit+block-external:external=text",
            "external=text cannot be combined with region-edit",
        ),
        (KONTEXT, "region-edit+block-external+deepcache", "cannot be combined"),
    ],
)
def test_bad_input_is_refused_before_compute(name, spec, message, make_pipe):
    pipe = make_pipe(name)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    with pytest.raises(ValueError, match=message):
        AcceleratedPipeline.from_pipe(pipe, spec)
    assert not calls


def test_spec_strings_carry_reference_plus_text():
    from ditaccel.methods import resolve_methods

    (config,) = resolve_methods("block-external:external=reference+text,refresh=3,mode=kv")
    assert (config.external, config.refresh, config.mode) == ("reference+text", 3, "kv")
    assert resolve_methods(config.spec()) == [config]
    with pytest.raises(ValueError, match="unknown method 'warp'"):
        resolve_methods("deepcache:interval=3+warp")


@pytest.mark.parametrize(
    ("name", "other"),
    [
        (KONTEXT, "deepcache:interval=2"),
        (KONTEXT, "adaptive-cache:threshold=0.5"),
        (FLUX, "deepcache:interval=2"),
        (QWEN_EDIT, "deepcache:interval=2"),
        (KONTEXT, "region-edit:source=mask,estimate_outside=false,dilate=0,budget=0,velocity_tolerance=0"),
    ],
)
def test_combinations_serve_the_plain_values_on_frozen_inputs(name, other, make_pipe):
    """A step cache keeps its residuals apart for the rows block-external's cached steps compute;
    region-edit's region steps go through untouched. On frozen inputs all of it is exact, and
    both methods did serve."""
    from PIL import Image

    pipe = make_pipe(name)
    external = "text" if name == FLUX else "reference"
    call = {"steps": 8, "sigmas": FROZEN}
    if other.startswith("region-edit"):
        size = example_call(name)["height"]
        mask = np.zeros((size, size), np.uint8)
        mask[size // 2 : 3 * size // 4, size // 4 : size // 2] = 255
        call["mask_image"] = Image.fromarray(mask)
    plain = velocities(pipe, name, **{k: v for k, v in call.items() if k != "mask_image"})
    acc = AcceleratedPipeline.from_pipe(
        pipe, f"block-external:external={external},refresh=4,warmup=1+{other}"
    )
    served = velocities(acc, name, **call)
    assert acc.stats.extra["external_cached_forwards"] > 0
    if other.startswith("region-edit"):
        assert acc.stats.extra["region_tokens"] == 1
    else:
        assert acc.stats.blocks_reused > 0
    for ours, theirs in zip(served, plain, strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "other", ["deepcache:interval=1", "region-edit:threshold=1,cache_reference=false,velocity_tolerance=0"]
)
def test_exact_settings_stay_exact_together(other, make_pipe):
    pipe = make_pipe(KONTEXT)
    plain = run(pipe, KONTEXT, steps=6)
    acc = AcceleratedPipeline.from_pipe(pipe, f"block-external:refresh=1+{other}")
    assert np.array_equal(run(acc, KONTEXT, steps=6), plain)
