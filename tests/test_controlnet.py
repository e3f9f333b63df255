"""ControlNet pipelines (FLUX, SD3) as adapter families: every method is exact at its exact
setting, and a cached block range never freezes or double-counts the control signal.

diffusers adds a ControlNet's residuals to the image stream after the blocks, inside the
transformer's loop. A range cache that stored "range output minus range input" would hold the
residuals added between the range's blocks, and when served the loop adds the current ones again
after each skipped block: on frozen inputs (equal sigmas: every step computes the same thing) the
served value then differs from the plain one by those residuals. The caches store the blocks'
own residual instead (``Adapter.block_additions``), checked here against the plain computation.
(The "none" and cache-exactness tests of every tiny pipeline, these included, are in
``test_exactness.py`` and ``test_caching.py``.)
"""

import functools

import numpy as np
import pytest
import torch
from conftest import run, velocities, with_profile
from PIL import Image

from ditaccel import AcceleratedPipeline
from ditaccel.bench import BenchSettings, run_bench
from ditaccel.testing import example_call

CONTROL = ["tiny-random-flux-controlnet", "tiny-random-sd3-controlnet"]
FROZEN = [0.7] * 8
TOLERANCE = dict(atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", CONTROL)
def test_attention_methods_at_their_exact_setting_are_the_plain_pipeline(name, make_pipe):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=3)
    for spec in (
        "sparse-attention:density=1",
        "block-external:external=text,refresh=1",
    ):
        accelerated = AcceleratedPipeline.from_pipe(pipe, spec)
        np.testing.assert_array_equal(run(accelerated, name, steps=3), plain, err_msg=spec)
        pipe = accelerated.remove()


@pytest.mark.parametrize("name", CONTROL)
@pytest.mark.parametrize(
    "spec",
    [
        "deepcache:interval=3,front=0,back=0",  # the range spans every block boundary with a residual
        "deepcache:interval=2",
        "adaptive-cache:threshold=0.5,order=1",
        "calibrated-cache:flops_ratio=0.5",
    ],
)
def test_range_caches_serve_the_plain_value_with_the_control_signal(name, spec, make_pipe, tmp_path):
    pipe = _begins_at_step_zero(make_pipe(name))
    spec = with_profile(spec, pipe, tmp_path, len(FROZEN))
    plain = velocities(pipe, name, steps=len(FROZEN), sigmas=FROZEN)
    accelerated = AcceleratedPipeline.from_pipe(pipe, spec)
    served = velocities(accelerated, name, steps=len(FROZEN), sigmas=FROZEN)
    assert accelerated.stats.blocks_reused > 0
    for step, (ours, theirs) in enumerate(zip(served, plain, strict=True)):
        torch.testing.assert_close(ours, theirs, **TOLERANCE, msg=lambda m, step=step: f"step {step}: {m}")


def _begins_at_step_zero(pipe):
    """With equal sigmas the scheduler cannot tell the first step by its timestep (it takes the
    second match, then runs past the end); FluxPipeline sets the begin index itself, the ControlNet
    pipelines do not, so it is set here after every ``set_timesteps``."""
    scheduler, set_timesteps = pipe.scheduler, pipe.scheduler.set_timesteps

    @functools.wraps(set_timesteps)  # the pipeline looks for ``sigmas`` in its signature
    def set_and_begin(*args, **kwargs):
        set_timesteps(*args, **kwargs)
        scheduler.set_begin_index(0)

    scheduler.set_timesteps = set_and_begin
    return pipe


@pytest.mark.parametrize("name", CONTROL)
def test_the_control_image_still_steers_the_cached_steps(name, make_pipe):
    """Between two control images, an accelerated call differs as the plain one does (the steps it
    serves from the cache still get the current image's residuals)."""
    pipe = make_pipe(name)
    other = {"control_image": Image.new("RGB", example_call(name)["control_image"].size, (20, 200, 40))}
    plain = run(pipe, name, steps=6) - run(pipe, name, steps=6, **other)
    accelerated = AcceleratedPipeline.from_pipe(pipe, "deepcache:interval=3")
    ours = run(accelerated, name, steps=6) - run(accelerated, name, steps=6, **other)
    assert accelerated.stats.blocks_reused > 0
    assert np.abs(plain).max() > 0.02  # the control image matters
    assert np.corrcoef(ours.ravel(), plain.ravel())[0, 1] > 0.9


@pytest.mark.parametrize("name", CONTROL)
def test_the_bench_runs_control_tasks(name):
    report = run_bench(BenchSettings(model=name, task="control", methods=["none", "deepcache:interval=2"],
                                     prompts=2, runs=1))  # fmt: skip
    cached = report["results"][1]
    assert report["task"] == "control" and cached["flops_ratio"] < 1.0 and cached["psnr_db"] > 10
