"""Families and settings the README names that the family tests do not build: Wan 2.2's second
transformer, PixArt-Alpha, a batch size that changes between calls, half-precision pipelines."""

import copy

import numpy as np
import pytest
import torch
from conftest import run
from diffusers import PixArtAlphaPipeline, WanPipeline

from ditaccel import AcceleratedPipeline
from ditaccel.testing import tiny_pipeline


def _wan22():
    """Wan 2.2: a second transformer for the low-noise steps (boundary_ratio)."""
    pipe = tiny_pipeline("tiny-random-wan")
    second = copy.deepcopy(pipe.transformer)
    with torch.no_grad():
        for p in second.parameters():
            p.mul_(0.9)
    components = {k: v for k, v in pipe.components.items() if k != "transformer_2"}
    wan22 = WanPipeline(**components, transformer_2=second, boundary_ratio=0.8)
    wan22.set_progress_bar_config(disable=True)
    return wan22


def test_wan22_both_transformers_are_accelerated_and_exact_when_asked():
    pipe = _wan22()
    name = "tiny-random-wan"
    plain = run(pipe, name, steps=8)
    for exact in ("none", "deepcache:interval=1"):
        acc = AcceleratedPipeline.from_pipe(pipe, methods=exact)
        assert np.array_equal(run(acc, name, steps=8), plain), exact
        pipe = acc.remove()
    probe = AcceleratedPipeline.from_pipe(pipe, methods=[])
    assert len(probe.adapter.denoisers()) == 2
    pipe = probe.remove()
    used: list[str] = []  # which transformer each forward ran
    pipe.transformer.register_forward_pre_hook(lambda *_: used.append("first"))
    pipe.transformer_2.register_forward_pre_hook(lambda *_: used.append("second"))
    acc = AcceleratedPipeline.from_pipe(pipe, methods="deepcache:interval=2,warmup=1,final=0")
    out = run(acc, name, steps=8)
    assert np.isfinite(out).all()
    reused = {used[i] for i, record in enumerate(acc.stats.records) if record.blocks_reused}
    assert reused == {"first", "second"}, list(zip(used, acc.stats.reuse_map(), strict=True))


def test_pixart_alpha_is_supported_and_exact():
    sigma = tiny_pipeline("tiny-random-pixart")
    pipe = PixArtAlphaPipeline(**sigma.components)
    pipe.set_progress_bar_config(disable=True)
    name = "tiny-random-pixart"
    plain = run(pipe, name, steps=4)
    for exact in ("none", "deepcache:interval=1", "sparse-attention:density=1"):
        acc = AcceleratedPipeline.from_pipe(pipe, methods=exact)
        assert np.array_equal(run(acc, name, steps=4), plain), exact
        pipe = acc.remove()
    acc = AcceleratedPipeline.from_pipe(pipe, methods="deepcache:interval=2")
    assert np.isfinite(run(acc, name, steps=4)).all() and acc.stats.blocks_reused > 0


@pytest.mark.parametrize("spec", ["deepcache:interval=2", "adaptive-cache:threshold=0.5,order=1"])
def test_a_batch_size_change_between_calls_starts_clean(spec):
    name = "tiny-random-flux"
    pipe = tiny_pipeline(name)
    pipe.set_progress_bar_config(disable=True)
    acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    one = run(acc, name, steps=4)
    two = run(acc, name, steps=4, num_images_per_prompt=2)
    assert two.shape[0] == 2 and np.isfinite(two).all()
    np.testing.assert_array_equal(run(acc, name, steps=4), one)
    alone = AcceleratedPipeline.from_pipe(acc.remove(), methods=spec)
    np.testing.assert_array_equal(run(alone, name, steps=4, num_images_per_prompt=2), two)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["tiny-random-flux", "tiny-random-sd3"])
def test_half_precision_pipelines(name, dtype):
    """What a GPU user runs, on the CPU where it works: exact settings stay bit-identical in half
    precision, and a cache keeps the pipeline's dtype."""
    pipe = tiny_pipeline(name, torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    plain = run(pipe, name, steps=4)
    for exact in ("none", "deepcache:interval=1"):
        acc = AcceleratedPipeline.from_pipe(pipe, methods=exact)
        assert np.array_equal(run(acc, name, steps=4), plain), exact
        pipe = acc.remove()
    residuals = []
    acc = AcceleratedPipeline.from_pipe(pipe, methods="deepcache:interval=2")
    original = acc.context.state

    def state(*args, **kwargs):
        value = original(*args, **kwargs)
        hidden = getattr(value, "hidden", None)
        if isinstance(hidden, torch.Tensor):
            residuals.append(hidden.dtype)
        return value

    acc.context.state = state
    out = run(acc, name, steps=4)
    assert np.isfinite(out).all() and acc.stats.blocks_reused > 0
    assert residuals and set(residuals) == {dtype}
