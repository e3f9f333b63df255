"""What a cache serves is what the plain pipeline computes, checked where that is exactly true.

With equal sigmas every step sees the same latents at the same timestep, so a residual, a
forecast or an attention part cached at one step is exactly what a later step would compute.
Each test runs a method on such frozen inputs, checks that it did serve (blocks reused, attention
blocks skipped), and compares every velocity the loop receives with the plain pipeline's. A cache
that served a wrong value (another block's residual, a stale branch, a dropped merge) fails here,
where "the output changed" would pass.
"""

import pytest
import torch
from conftest import velocities

from ditaccel import AcceleratedPipeline
from ditaccel.testing import synthetic_profile

FROZEN = [0.7] * 8
TOLERANCE = dict(atol=2e-5, rtol=1e-4)


def _assert_served_plain(pipe, name: str, spec: str, **call) -> AcceleratedPipeline:
    plain = velocities(pipe, name, steps=8, sigmas=FROZEN, **call)
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    served = velocities(accelerated, name, steps=8, sigmas=FROZEN, **call)
    assert len(served) == len(plain)
    for step, (ours, theirs) in enumerate(zip(served, plain, strict=True)):
        torch.testing.assert_close(ours, theirs, **TOLERANCE, msg=lambda m, step=step: f"step {step}: {m}")
    return accelerated


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("tiny-random-flux", "deepcache:interval=3"),
        ("tiny-random-flux", "deepcache:interval=2,front=0,back=1"),
        ("tiny-random-qwen-image", "deepcache:interval=2"),
        ("tiny-random-flux", "adaptive-cache:threshold=0.5"),
        ("tiny-random-flux", "adaptive-cache:threshold=0.5,order=1"),
        ("tiny-random-flux", "adaptive-cache:threshold=0.5,decide=probe,order=2"),
        ("tiny-random-flux-kontext", "deepcache:interval=2"),
    ],
)
def test_step_caches_serve_the_plain_residual(name, spec, make_pipe):
    accelerated = _assert_served_plain(make_pipe(name), name, spec)
    assert accelerated.stats.blocks_reused > 0


def test_step_caches_serve_each_cfg_branch_its_own_residual(make_pipe):
    """True CFG runs cond and uncond as separate forwards: serving one the other's residual would
    be wrong by the prompts' difference."""
    name = "tiny-random-flux"
    cfg = {"negative_prompt": "blurry", "true_cfg_scale": 3.0}
    accelerated = _assert_served_plain(make_pipe(name), name, "deepcache:interval=2", **cfg)
    assert {r.branch for r in accelerated.stats.records if r.blocks_reused} == {0, 1}


def test_calibrated_cache_serves_the_plain_block_outputs(make_pipe, tmp_path):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    path = synthetic_profile(pipe, steps=len(FROZEN)).save(tmp_path / "p.json")
    for order in (0, 1):
        spec = f"calibrated-cache:profile={path},flops_ratio=0.5,order={order}"
        accelerated = _assert_served_plain(pipe, name, spec)
        assert accelerated.stats.blocks_reused > 0
        pipe = accelerated.remove()


def test_sparse_attention_refresh_serves_the_masked_blocks_merged(make_pipe):
    """Between refreshes the blocks a mask skips are served from the refresh step's partial
    attention (merged by LSE): on frozen inputs that is dense attention."""
    name = "tiny-random-flux"
    spec = (
        "sparse-attention:density=0.25,refresh=3,block=16,dense_steps=0,dense_layers=0,"
        "min_similarity=-1,keep_text=false"
    )
    accelerated = _assert_served_plain(make_pipe(name), name, spec, height=64, width=64)
    assert accelerated.stats.realised_attention_density() < 1.0
