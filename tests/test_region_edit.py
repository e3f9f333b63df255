"""``region-edit``: exact where it must be, the region machinery exact on frozen inputs, the
one-step jump, compositing, and every refusal before compute."""

import numpy as np
import pytest
import torch
from conftest import run
from PIL import Image

from ditaccel import AcceleratedPipeline
from ditaccel.testing import IMAGE_SIZE, example_call

KONTEXT, FILL, QWEN_EDIT = "tiny-random-flux-kontext", "tiny-random-flux-fill", "tiny-random-qwen-image-edit"


def _mask(size: int, box: tuple[int, int, int, int]) -> Image.Image:
    top, left, bottom, right = box
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[top:bottom, left:right] = 255
    return Image.fromarray(mask)


def _frozen(steps: int = 8) -> list[float]:
    """Equal sigmas: every step but the last sees the same latents at the same timestep, so the
    K/V cached at a full step are exactly what a region step's other tokens would compute."""
    return [0.7] * steps


@pytest.mark.parametrize("name", [KONTEXT, QWEN_EDIT])
def test_every_token_edited_is_the_plain_pipeline(name, make_pipe):
    """The issue's exactness: partition forced to all edited (reference included), no velocity
    cache. With the reference served from the K/V cache the region steps still run."""
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=8)
    spec = "region-edit:threshold=1,cache_reference=false,velocity_tolerance=0"
    acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    assert np.array_equal(run(acc, name, steps=8), plain)
    assert acc.stats.extra["edited_share"] == 1.0 and "region_tokens" not in acc.stats.extra
    cached = AcceleratedPipeline.from_pipe(acc.remove(), methods="region-edit:threshold=1")
    assert not np.array_equal(run(cached, name, steps=8), plain)
    assert cached.stats.extra["region_tokens"] == 16


def _velocities(pipe, name: str, **call) -> list[torch.Tensor]:
    """Every velocity the pipeline's loop receives from the transformer in one call."""
    seen: list[torch.Tensor] = []
    transformer = pipe.transformer
    hook = transformer.register_forward_hook(lambda _m, _a, out: seen.append(out[0].clone()))
    try:
        run(pipe, name, **call)
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize(
    ("name", "tolerance", "images"),
    [(KONTEXT, 0.0, 1), (KONTEXT, 0.1, 1), (KONTEXT, 0.0, 2), (QWEN_EDIT, 0.0, 1), (QWEN_EDIT, 0.1, 1)],
)
def test_region_steps_match_the_plain_pipeline_on_frozen_inputs(name, tolerance, images, make_pipe):
    """A partial partition computes few tokens, yet on frozen inputs every step hands the loop the
    plain velocity: the gathered positions, the region K/V cache and the served velocities."""
    pipe = make_pipe(name)
    size = example_call(name)["height"]
    mask = _mask(size, (size // 2, size // 4, 3 * size // 4, size // 2))  # token (2, 1) of 4x4
    call = {"steps": 8, "sigmas": _frozen(), "num_images_per_prompt": images}
    plain = _velocities(pipe, name, **call)
    acc = AcceleratedPipeline.from_pipe(
        pipe,
        methods=f"region-edit:source=mask,estimate_outside=false,dilate=0,budget=0,velocity_tolerance={tolerance}",
    )
    accelerated = _velocities(acc, name, **call, mask_image=mask)
    assert acc.stats.extra["region_tokens"] == 1
    assert (acc.stats.blocks_reused > 0) == (tolerance > 0)  # constant velocity: always served
    assert len(accelerated) == len(plain)
    for ours, theirs in zip(accelerated, plain, strict=True):
        torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)


def test_instruction_partition_on_a_reference_of_another_grid(make_pipe):
    """Qwen-Image-Edit resizes the reference to ~1 MP: it is compared on the output's grid."""
    pipe = make_pipe(QWEN_EDIT)
    seen = []
    pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(
            (adapter.token_layout(module, args, kwargs), adapter.source_latents(module, args, kwargs))
        ),
        with_kwargs=True,
    )
    shares = []
    for threshold in (-1.0, 0.5):
        acc = AcceleratedPipeline.from_pipe(
            pipe, methods=f"region-edit:threshold={threshold},erode=0,dilate=0"
        )
        adapter = acc.adapter
        out = run(acc, QWEN_EDIT, steps=8)
        shares.append(acc.stats.extra["edited_share"])
        assert np.isfinite(out).all() and acc.method("region-edit").edited_mask.shape == (4, 4)
        pipe = acc.remove()
    layout, source = seen[0]
    assert layout.reference_grid != layout.grid[1:] and source.shape[1] == layout.image == 16
    assert shares[0] == 0.0 and shares[1] > 0.0  # nothing edited: every token takes the jump


def test_references_are_resampled_onto_the_output_grid():
    from ditaccel.pipelines.base import Adapter

    rows = torch.arange(8.0)[:, None].expand(8, 8)  # a vertical gradient on an 8x8 grid
    tokens = torch.stack([rows, torch.full((8, 8), 2.0)], dim=-1).reshape(1, 64, 2)
    small = Adapter.on_grid(tokens, (8, 8), (4, 4)).reshape(4, 4, 2)
    assert torch.allclose(small[..., 1], torch.full((4, 4), 2.0))  # a constant stays constant
    assert (small[1:, :, 0] > small[:-1, :, 0]).all() and torch.allclose(small[:, 0, 0], small[:, 3, 0])
    assert Adapter.on_grid(tokens, (8, 8), (8, 8)) is tokens


def test_unedited_tokens_take_the_one_step_jump(make_pipe):
    """Between the partition and the refresh step the unedited latents move on one straight line:
    x(sigma) = x(sigma_w) + (sigma - sigma_w) v, RegionE's jump to the refresh point."""
    pipe = make_pipe(KONTEXT)
    latents: list[torch.Tensor] = []

    def keep(_pipe, _step, _t, kwargs):
        latents.append(kwargs["latents"].clone())
        return kwargs

    acc = AcceleratedPipeline.from_pipe(
        pipe, methods="region-edit:source=mask,estimate_outside=false,dilate=0,budget=0"
    )
    mask = _mask(IMAGE_SIZE, (0, 0, 8, 8))
    run(acc, KONTEXT, steps=10, mask_image=mask, callback_on_step_end=keep)
    warmup, refresh, _ = acc._method_objects[0].config.full_steps(10)
    sigmas = acc.scheduler.sigmas

    def moves(tokens: slice) -> list[torch.Tensor]:
        start = latents[warmup - 2][:, tokens]  # the input of the last warm-up step
        return [
            (latents[k][:, tokens] - start) / float(sigmas[k + 1] - sigmas[warmup - 1])
            for k in range(warmup - 1, refresh)
        ]

    unedited, edited = moves(slice(1, None)), moves(slice(0, 1))  # the mask covers token 0
    assert len(unedited) >= 3
    for move in unedited[1:]:
        torch.testing.assert_close(move, unedited[0], atol=1e-4, rtol=1e-4)
    assert not all(torch.allclose(move, edited[0], atol=1e-4, rtol=1e-4) for move in edited[1:])


def test_fill_full_mask_is_exact_and_partial_mask_computes_less(make_pipe):
    pipe = make_pipe(FILL)
    full = _mask(IMAGE_SIZE, (0, 0, IMAGE_SIZE, IMAGE_SIZE))
    plain = run(pipe, FILL, steps=8, mask_image=full)
    acc = AcceleratedPipeline.from_pipe(pipe, methods="region-edit")
    assert np.array_equal(run(acc, FILL, steps=8, mask_image=full), plain)
    assert acc.stats.extra["edited_share"] == 1.0
    small = _mask(IMAGE_SIZE, (0, 0, 8, 8))
    run(acc, FILL, steps=8, mask_image=small)
    assert acc.stats.extra["edited_share"] < 1.0 and acc.stats.extra["region_tokens"] < 16


@pytest.mark.parametrize(("name", "extra"), [(KONTEXT, {}), (FILL, {}), (FILL, {"strength": 0.6})])
def test_composite_lands_outside_the_mask_on_the_source_latents(name, extra, make_pipe):
    pipe = make_pipe(name)
    acc = AcceleratedPipeline.from_pipe(pipe, methods="region-edit:source=mask,composite=true")
    source: list[torch.Tensor] = []
    hook = acc.adapter.denoisers()[0].register_forward_pre_hook(
        lambda module, args, kwargs: source.append(acc.adapter.source_latents(module, args, kwargs)),
        with_kwargs=True,
    )
    mask = _mask(IMAGE_SIZE, (0, 0, 8, 8))
    out = acc(**example_call(name, steps=6, mask_image=mask, output_type="latent", **extra)).images
    hook.remove()
    outside = torch.ones(16, dtype=torch.bool)
    outside[0] = False  # the 8x8 corner is the top-left token of the 4x4 grid
    torch.testing.assert_close(out[:, outside], source[-1][:, outside].to(out.dtype), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out[:, 0], source[-1][:, 0])


def test_composite_refuses_a_reference_on_another_grid_before_any_step(make_pipe):
    acc = AcceleratedPipeline.from_pipe(make_pipe(KONTEXT), methods="region-edit:composite=true")
    steps = []

    def count(_pipe, step, _t, kwargs):
        steps.append(step)
        return kwargs

    with pytest.raises(ValueError, match=r"composite needs the source on the output's token grid \(6, 6\)"):
        run(acc, KONTEXT, mask_image=_mask(IMAGE_SIZE, (0, 0, 4, 4)), height=48, width=48, max_area=48 * 48,
            callback_on_step_end=count)  # fmt: skip
    assert not steps


def test_refusals_come_before_any_compute(make_pipe):
    from diffusers import FlowMatchHeunDiscreteScheduler

    pipe = make_pipe(KONTEXT)
    calls = []
    pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    acc = AcceleratedPipeline.from_pipe(pipe, methods="region-edit:source=mask")
    corner = _mask(IMAGE_SIZE, (0, 0, 4, 4))
    with pytest.raises(ValueError, match="needs a mask_image"):
        run(acc, KONTEXT)
    with pytest.raises(ValueError, match="the mask is 16x16, the image 32x32"):
        run(acc, KONTEXT, mask_image=_mask(16, (0, 0, 4, 4)))
    with pytest.raises(ValueError, match="empty"):
        run(acc, KONTEXT, mask_image=_mask(IMAGE_SIZE, (0, 0, 0, 0)))
    with pytest.raises(ValueError, match="source image"):
        run(acc, KONTEXT, image=None, mask_image=corner)
    with pytest.raises(ValueError, match="one mask_image per call, got 2"):
        run(acc, KONTEXT, mask_image=[corner, corner])
    heun = FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="FlowMatchEulerDiscreteScheduler, this pipeline has FlowMatchHeun"):
        pipe.scheduler, original = heun, pipe.scheduler
        try:
            run(AcceleratedPipeline.from_pipe(acc.remove(), methods="region-edit"), KONTEXT)
        finally:
            pipe.scheduler = original
    assert not calls
    with pytest.raises(ValueError, match="applies to"):
        AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), methods="region-edit")
    with pytest.raises(ValueError, match="source must be"):
        AcceleratedPipeline.from_pipe(make_pipe(KONTEXT), methods="region-edit:source=sketch")


def test_masks_as_tensors_and_no_leak_into_a_direct_call(make_pipe):
    pipe = make_pipe(KONTEXT)
    acc = AcceleratedPipeline.from_pipe(pipe, methods="region-edit:estimate_outside=false,dilate=0,budget=0")
    tensor = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    tensor[..., :8, :8] = 1.0
    run(acc, KONTEXT, steps=6, mask_image=tensor)
    assert acc.method("region-edit").edited_mask.sum() == 1
    run(pipe, KONTEXT, steps=6)  # the wrapped pipeline called directly: no mask this time
    assert acc.context.call_arguments == {}
    assert acc.method("region-edit").edited_mask.sum() != 1  # the estimate's partition


def test_reachable_from_pretrained_with_image_prompt_and_mask(make_pipe, tmp_path):
    make_pipe(KONTEXT).save_pretrained(tmp_path)
    acc = AcceleratedPipeline.from_pretrained(str(tmp_path), methods=["region-edit"])
    call = example_call(KONTEXT, steps=6)
    out = acc(
        image=call.pop("image"), prompt=call.pop("prompt"), mask_image=_mask(IMAGE_SIZE, (0, 0, 8, 8)), **call
    )
    assert out.images.shape == (1, IMAGE_SIZE, IMAGE_SIZE, 3)
    assert "edited_share" in acc.stats.extra
    assert acc.method("region-edit").edited_mask.shape == (4, 4)
    with pytest.raises(KeyError, match="no method 'deepcache'"):
        acc.method("deepcache")


def test_cli_generate_hands_the_mask_to_region_edit(tmp_path):
    from typer.testing import CliRunner

    from ditaccel.cli import app

    src, mask, out = tmp_path / "src.png", tmp_path / "mask.png", tmp_path / "out.png"
    Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "red").save(src)
    _mask(IMAGE_SIZE, (0, 0, 8, 8)).save(mask)
    args = [
        "generate",
        "--model",
        KONTEXT,
        "--prompt",
        "make it blue",
        "--image",
        str(src),
        "--out",
        str(out),
    ]
    args += ["--steps", "6", "--methods", "region-edit:source=mask"]
    result = CliRunner().invoke(app, [*args, "--mask", str(mask)], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (IMAGE_SIZE, IMAGE_SIZE)
    refused = CliRunner().invoke(app, args, terminal_width=200)
    assert refused.exit_code == 2 and "needs a mask_image" in " ".join(refused.output.split())


def test_mask_partition_adds_the_tokens_the_estimate_sees_changing(make_pipe):
    pipe = make_pipe(KONTEXT)
    mask = _mask(IMAGE_SIZE, (0, 0, 8, 8))
    chosen = {}
    for outside in ("false", "true"):
        spec = f"region-edit:source=mask,dilate=0,budget=0,erode=0,threshold=0.99,estimate_outside={outside}"
        acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        run(acc, KONTEXT, steps=6, mask_image=mask)
        chosen[outside] = acc.method("region-edit").edited_mask.flatten()
        pipe = acc.remove()
    assert chosen["false"].sum() == 1 and chosen["false"][0]
    assert chosen["true"][0] and chosen["true"].sum() > 1


def test_attention_that_is_not_plain_sdpa_runs_every_branch_in_full(make_pipe):
    """A padded text mask turns Qwen-Image's attention into masked SDPA, which the region K/V
    cache cannot serve: a warning, and the plain pipeline's output."""
    pipe = make_pipe(QWEN_EDIT)
    call = example_call(QWEN_EDIT, steps=8)
    embeds, _ = pipe.encode_prompt(prompt=call.pop("prompt"), image=call["image"], device="cpu")
    padded = torch.ones(embeds.shape[:2], dtype=torch.long)
    padded[:, -4:] = 0  # the last 4 text tokens are padding
    call.update(prompt_embeds=embeds, prompt_embeds_mask=padded)
    del call["generator"]
    plain = np.asarray(pipe(**call, generator=torch.Generator().manual_seed(0)).images)
    acc = AcceleratedPipeline.from_pipe(pipe, methods="region-edit:threshold=0.5")
    with pytest.warns(UserWarning, match="not plain SDPA"):
        out = np.asarray(acc(**call, generator=torch.Generator().manual_seed(0)).images)
    assert acc.stats.extra["region_fallback"] == 1.0 and "region_tokens" not in acc.stats.extra
    assert np.array_equal(out, plain)
