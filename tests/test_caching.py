"""Step / feature caching: exact settings are the plain pipeline, caches really skip blocks, state
stays within one call and one CFG branch."""

import math

import numpy as np
import pytest
import torch
from conftest import run
from hypothesis import given, settings
from hypothesis import strategies as st

from ditaccel import AcceleratedPipeline
from ditaccel.hooks.block_range import flat_blocks
from ditaccel.methods import schedules
from ditaccel.methods.adaptive_cache import relative_l1
from ditaccel.methods.taylor import TaylorSeries
from ditaccel.testing import TINY_MODELS, example_call

EXACT = [
    "deepcache:interval=1",
    "adaptive-cache:threshold=0",
    "adaptive-cache:threshold=0,order=2",
    "adaptive-cache:threshold=0,decide=probe",
]


@pytest.mark.parametrize("name", TINY_MODELS)
def test_exact_settings_are_bit_identical(name, make_pipe):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=4)
    for spec in EXACT:
        accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        assert np.array_equal(run(accelerated, name, steps=4), plain), spec
        assert accelerated.stats.blocks_reused == 0
        accelerated.remove()


def _deep_calls(pipe, accelerated):
    """Per block, how many forwards ran its sub-modules (a skipped block runs none)."""
    counts = {}
    for block in flat_blocks(accelerated.adapter, accelerated.adapter.denoisers()[0]):
        counts[block.name] = 0

        def hook(*_, name=block.name):
            counts[name] += 1

        first_child = next(iter(block.module.children()))
        first_child.register_forward_hook(hook)
    return counts


@pytest.mark.parametrize("name", TINY_MODELS)
def test_deepcache_skips_the_deep_blocks_on_cached_steps(name, make_pipe):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=4)
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods="deepcache:interval=2,front=1,final=0")
    counts = _deep_calls(pipe, accelerated)
    out = run(accelerated, name, steps=4)
    stats = accelerated.stats
    # warm-up step 0, then every 2nd step from step 1: step 2 is the one served from the cache
    assert stats.steps_with_reuse == [2]
    forwards = stats.forwards
    per_step = forwards // 4
    names = list(counts)
    assert counts[names[0]] == forwards  # the front block always runs
    assert all(counts[n] == forwards - per_step for n in names[1:])
    assert stats.blocks_reused == per_step * (len(names) - 1)
    assert stats.reuse_by_block() == {n: per_step for n in names[1:]}
    assert stats.to_dict()["reused_steps"] == [2]
    assert not np.array_equal(out, plain)
    assert np.isfinite(out).all()


@pytest.mark.parametrize(("decide", "expected"), [("probe", [1, 3, 5]), ("rate", [2, 4, 6])])
def test_adaptive_cache_reuses_and_respects_max_reuse(decide, expected, make_pipe):
    pipe = make_pipe("tiny-random-flux")
    spec = f"adaptive-cache:threshold=100,max_reuse=1,final=1,decide={decide}"
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    counts = _deep_calls(pipe, accelerated)
    run(accelerated, "tiny-random-flux", steps=8)
    reused = accelerated.stats.steps_with_reuse
    # threshold never reached: every step it may reuse, it does, but never two in a row; step 0
    # (warm-up) and step 7 (final) compute, and the rate needs two computed steps (0 and 1)
    assert reused == expected
    names = list(counts)
    if decide == "probe":  # the probe block runs at every step, the others at the computed ones
        assert counts[names[0]] == 8 and all(counts[n] == 8 - len(expected) for n in names[1:])
    else:  # a served step runs no block at all
        assert all(counts[n] == 8 - len(expected) for n in names)


def _stack_residuals(pipe, name: str, steps: int) -> list[torch.Tensor]:
    """Per step of a plain run, the image stream leaving the last block minus the one entering
    the first (the residual decide=rate watches)."""
    plain = AcceleratedPipeline.from_pipe(pipe, methods=[])
    blocks = flat_blocks(plain.adapter, pipe.transformer)
    entering, residuals = [], []
    first = blocks[0].module.register_forward_pre_hook(
        lambda m, args, kwargs: entering.append(blocks[0].io.split_input(args, kwargs)[0]), with_kwargs=True
    )
    last = blocks[-1].module.register_forward_hook(
        lambda m, a, output: residuals.append(blocks[-1].io.split_output(output)[0] - entering[-1])
    )
    run(plain, name, steps=steps)
    first.remove(), last.remove(), plain.remove()
    return residuals


def test_adaptive_cache_rate_is_the_residual_change_per_step(make_pipe):
    """decide=rate serves a step while the change per step of the whole stack's residual between
    the last two computed steps, times the steps since the last compute, stays under the
    threshold: just above the rate measured over steps 0 -> 1, step 2 is served and step 3 (twice
    the rate) is not; just below it, step 2 is computed."""
    name, steps = "tiny-random-flux", 6
    pipe = make_pipe(name)
    residuals = _stack_residuals(pipe, name, steps)
    rate = float(relative_l1(residuals[1], residuals[0]))
    reused = {}
    for factor in (1.01, 0.99):
        spec = f"adaptive-cache:threshold={rate * factor},ramp=0,max_reuse=5,warmup=1,final=0"
        acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        run(acc, name, steps=steps)
        reused[factor] = acc.stats.steps_with_reuse
        pipe = acc.remove()
    assert reused[1.01][:1] == [2] and 3 not in reused[1.01]
    assert 2 not in reused[0.99]


def test_adaptive_cache_threshold_ramps_over_the_schedule(make_pipe):
    """A threshold under every step's change reuses nothing without a ramp; with a ramp it grows
    along the schedule, so reuse begins once it passes the change: a steeper ramp begins no later."""
    name, steps = "tiny-random-flux", 10
    pipe = make_pipe(name)
    first = {}
    for ramp in (0, 1e3, 1e5, 1e7):
        acc = AcceleratedPipeline.from_pipe(
            pipe, methods=f"adaptive-cache:threshold=1e-6,max_reuse=1,ramp={ramp}"
        )
        run(acc, name, steps=steps)
        reused = acc.stats.steps_with_reuse
        first[ramp] = min(reused) if reused else steps
        acc.remove()
    assert first[0] == steps  # no ramp: nothing reused
    assert first[1e7] < steps  # a steep ramp passes the change
    assert first[0] >= first[1e3] >= first[1e5] >= first[1e7]
    assert first[1e3] > first[1e7]  # and the start moves with the ramp


def test_adaptive_cache_with_taylor_forecast_differs_from_plain_reuse(make_pipe):
    pipe = make_pipe("tiny-random-flux")
    outputs = {}
    for order in (0, 1):
        accelerated = AcceleratedPipeline.from_pipe(
            pipe, methods=f"adaptive-cache:threshold=100,max_reuse=2,order={order}"
        )
        outputs[order] = run(accelerated, "tiny-random-flux", steps=8)
        assert accelerated.stats.steps_with_reuse
        accelerated.remove()
    assert not np.array_equal(outputs[0], outputs[1])


@pytest.mark.parametrize("spec", ["deepcache:interval=2", "adaptive-cache:threshold=100"])
def test_no_state_leaks_between_calls(spec, make_pipe):
    name = "tiny-random-flux"
    prompts = ("a red circle", "a blue square on the left")
    shared = AcceleratedPipeline.from_pipe(make_pipe(name), methods=spec)
    in_a_row = [run(shared, name, steps=5, prompt=p) for p in prompts]
    fresh = [
        run(AcceleratedPipeline.from_pipe(make_pipe(name), methods=spec), name, steps=5, prompt=p)
        for p in prompts
    ]
    for a, b in zip(in_a_row, fresh, strict=True):
        assert np.array_equal(a, b)


def test_separate_cfg_branches_are_cached_separately(make_pipe):
    name = "tiny-random-flux"
    cfg = {"negative_prompt": "blurry", "true_cfg_scale": 3.0}
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=4, **cfg)
    exact = AcceleratedPipeline.from_pipe(pipe, methods="deepcache:interval=1")
    assert np.array_equal(run(exact, name, steps=4, **cfg), plain)
    exact.remove()

    accelerated = AcceleratedPipeline.from_pipe(pipe, methods="deepcache:interval=2,final=0")
    run(accelerated, name, steps=4, **cfg)
    reuse = [(step, branch) for step, branch, _, reused in accelerated.stats.reuse_map() if reused]
    assert reuse == [(2, 0), (2, 1)]
    # each branch stands in with its own residual: one cache for both would hand the uncond
    # residual to the cond pass, which this reference reproduces and which must differ
    shared = _shared_branch_reference(make_pipe(name), name, cfg)
    assert not np.array_equal(run(accelerated, name, steps=4, **cfg), shared)


def _shared_branch_reference(pipe, name, cfg):
    """deepcache interval=2 with one cache for both CFG branches (the bug the design prevents)."""
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods="deepcache:interval=2,final=0")
    context = accelerated.context
    original = context.state

    def state(owner, factory, shared=False, by_rows=False):
        info = context.current
        key = (owner, info.denoiser, 0)
        held = context._states.get(key)
        if held is None:
            held = (info.signature, factory())
            context._states[key] = held
        return held[1]

    context.state = state
    try:
        return run(accelerated, name, steps=4, **cfg)
    finally:
        context.state = original


def test_state_is_dropped_after_each_call(make_pipe):
    accelerated = AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), methods="deepcache:interval=2")
    run(accelerated, "tiny-random-flux", steps=4)
    assert not accelerated.context._states


def test_invalid_configurations_fail_before_any_hook(make_pipe):
    pipe = make_pipe("tiny-random-flux")
    with pytest.raises(ValueError, match="leaves no block"):
        AcceleratedPipeline.from_pipe(pipe, methods="deepcache:front=2,back=2")
    with pytest.raises(ValueError):
        AcceleratedPipeline.from_pipe(pipe, methods="deepcache+adaptive-cache")
    with pytest.raises(ValueError, match="front"):
        AcceleratedPipeline.from_pipe(pipe, methods="adaptive-cache:decide=probe,front=0")
    with pytest.raises(ValueError, match="decide"):
        AcceleratedPipeline.from_pipe(pipe, methods="adaptive-cache:decide=sometimes")
    assert not hasattr(pipe.transformer.transformer_blocks[1], "_diffusers_hook") or not any(
        pipe.transformer.transformer_blocks[1]._diffusers_hook.hooks
    )


def test_remove_takes_every_hook_off(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=4)
    for spec in ("deepcache:interval=2", "adaptive-cache:threshold=100"):
        accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        run(accelerated, name, steps=4)
        accelerated.remove()
        assert np.array_equal(run(pipe, name, steps=4), plain)
        for block in flat_blocks(accelerated.adapter, pipe.transformer):
            registry = getattr(block.module, "_diffusers_hook", None)
            assert registry is None or not registry.hooks


def test_example_call_uses_the_given_prompt():
    # the leak test relies on the prompt reaching the call
    assert example_call("tiny-random-flux", prompt="x")["prompt"] == "x"


# --- schedules ---------------------------------------------------------------------------------
def test_uniform_schedule():
    assert schedules.full_steps(10, 3, warmup=1, final=1) == {0, 1, 4, 7, 9}
    assert schedules.full_steps(10, 1) == set(range(10))


def test_nonuniform_schedule_matches_deepcache_defaults():
    steps = sorted(schedules.full_steps(50, 5, "nonuniform", center=0.3, power=1.4))
    assert len(steps) == 10 and steps[0] == 0
    gaps = np.diff(steps)
    near = min(range(len(steps)), key=lambda i: abs(steps[i] - 15))
    assert gaps[max(0, near - 1)] <= gaps[-1]  # dense around the centre, sparse at the end


@settings(max_examples=60, deadline=None)
@given(total=st.integers(2, 80), interval=st.integers(1, 8), center=st.floats(0, 1), power=st.floats(1, 2))
def test_nonuniform_schedule_has_the_uniform_step_count(total, interval, center, power):
    steps = schedules.full_steps(total, interval, "nonuniform", center=center, power=power)
    assert all(0 <= s < total for s in steps)
    assert 0 in steps
    assert len(steps) == (total if interval == 1 else min(total, math.ceil(total / interval)))


# --- Taylor forecast -----------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(a=st.floats(-3, 3), b=st.floats(-3, 3), k=st.integers(1, 4), order=st.integers(1, 2))
def test_taylor_forecast_is_exact_on_lines(a, b, k, order):
    series = TaylorSeries(order)
    for step in (0, 2, 4):
        series.update(torch.tensor(a + b * step, dtype=torch.float64), step)
    assert float(series.forecast(4 + k)) == pytest.approx(a + b * (4 + k), abs=1e-9)


def test_taylor_order_zero_is_plain_reuse():
    series = TaylorSeries(0)
    series.update(torch.tensor(1.0), 0)
    series.update(torch.tensor(3.0), 2)
    assert float(series.forecast(5)) == 3.0
