"""A server's view: many calls in a row with changing prompts, batch sizes and resolutions, two
accelerated pipelines side by side, and direct calls of a wrapped pipeline in between."""

import gc

import numpy as np
import pytest
import torch
from conftest import run

from ditaccel import AcceleratedPipeline
from ditaccel.testing import example_call, synthetic_profile, tiny_pipeline

FLUX, KONTEXT = "tiny-random-flux", "tiny-random-flux-kontext"
PROMPTS = ("a red circle", "two blue squares on the left", "a green triangle, striped background")
LONG_RUN_CALLS = 200
# (model, spec) for every method; calibrated-cache gets a profile of the tiny model (fixture)
METHODS = {
    "deepcache": (FLUX, "deepcache:interval=2"),
    "adaptive-cache": (FLUX, "adaptive-cache:threshold=0.5,order=1"),
    "calibrated-cache": (FLUX, "calibrated-cache:flops_ratio=0.5,profile={profile}"),
    "sparse-attention": (
        FLUX,
        "sparse-attention:density=0.5,block=16,dense_steps=0,dense_layers=0,refresh=2",
    ),
    "region-edit": (KONTEXT, "region-edit:warmup=0.25"),
    "peer-fbcache": (FLUX, "peer-fbcache:threshold=0.5"),
    "peer-taylorseer": (FLUX, "peer-taylorseer:cache_interval=2"),
    "peer-magcache": (FLUX, "peer-magcache:threshold=0.5,num_inference_steps=4"),
}


@pytest.fixture(scope="module")
def tiny_profile(tmp_path_factory):
    """A synthetic calibration profile of tiny-random-flux's block layout (4 steps)."""
    return synthetic_profile(tiny_pipeline(FLUX)).save(tmp_path_factory.mktemp("profile") / "p.json")


def _spec(method: str, profile) -> tuple[str, str]:
    name, spec = METHODS[method]
    return name, spec.format(profile=profile)


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, torch.Tensor))


def _varied_call(name: str, i: int) -> dict:
    base = example_call(name, steps=4 if i % 5 else 3, seed=i)
    size = base["height"] + (16 if i % 3 == 1 else 0)
    return {
        **base,
        "prompt": PROMPTS[i % len(PROMPTS)],
        "height": size,
        "width": size,
        "num_images_per_prompt": 1 + (i % 4 == 3),
        **({"image": base["image"].resize((size, size))} if "image" in base else {}),
    }


@pytest.mark.parametrize("method", list(METHODS))
def test_long_runs_release_their_caches(method, tiny_profile):
    """200 calls with changing prompts, step counts, resolutions and batch sizes: every call
    ends with no cached tensor held, and nothing accumulates (live tensors flat after warm-up)."""
    name, spec = _spec(method, tiny_profile)
    pipe = tiny_pipeline(name)
    pipe.set_progress_bar_config(disable=True)
    acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    counts, peaks = [], []
    with torch.no_grad():
        for i in range(LONG_RUN_CALLS):
            out = acc(**_varied_call(name, i))
            assert np.isfinite(out.images).all()
            assert not acc.context._states, f"call {i} kept its cached tensors"
            peaks.append(acc.stats.to_dict()["cache_peak_bytes"])
            if i in (20, LONG_RUN_CALLS - 1):
                counts.append(_live_tensors())
    assert counts[1] <= counts[0] + 8, f"live tensors grew from {counts[0]} to {counts[1]}"
    if not method.startswith("peer-"):  # diffusers' own hooks keep their state out of ours
        assert max(peaks) > 0


@pytest.mark.parametrize(
    "method", ["deepcache", "adaptive-cache", "sparse-attention", "region-edit", "calibrated-cache"]
)
def test_two_pipelines_called_in_turn_equal_each_alone(method, tiny_profile):
    """Two accelerated pipelines of the same class (other weights) in one process, called
    alternately, give what each gives alone; a direct call of a wrapped pipeline between two
    wrapper calls changes neither."""
    name, spec = _spec(method, tiny_profile)
    first, second = (tiny_pipeline(name, seed=s) for s in (0, 1))
    for pipe in (first, second):
        pipe.set_progress_bar_config(disable=True)
    alone = []
    for pipe in (first, second):
        acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        alone.append(run(acc, name, steps=4))
        acc.remove()
    a, b = (AcceleratedPipeline.from_pipe(p, methods=spec) for p in (first, second))
    turns = [run(a, name, steps=4), run(b, name, steps=4), run(a, name, steps=4), run(b, name, steps=4)]
    np.testing.assert_array_equal(turns[0], alone[0])
    np.testing.assert_array_equal(turns[2], alone[0])
    np.testing.assert_array_equal(turns[1], alone[1])
    np.testing.assert_array_equal(turns[3], alone[1])
    run(a.pipeline, name, steps=3, seed=7)  # the hooks see a new schedule and start clean
    np.testing.assert_array_equal(run(a, name, steps=4), alone[0])
    np.testing.assert_array_equal(run(b, name, steps=4), alone[1])


def test_cache_peak_bytes_are_reported(tiny_profile):
    name, spec = _spec("deepcache", tiny_profile)
    acc = AcceleratedPipeline.from_pipe(tiny_pipeline(name), methods=spec)
    acc.set_progress_bar_config(disable=True)
    run(acc, name, steps=4)
    by_owner = acc.stats.cache_peak_bytes
    assert by_owner and all(v > 0 for v in by_owner.values())
    assert acc.stats.to_dict()["cache_peak_bytes"] == sum(by_owner.values())
    plain = AcceleratedPipeline.from_pipe(acc.remove(), methods=[])
    run(plain, name, steps=4)
    assert plain.stats.to_dict()["cache_peak_bytes"] == 0
