"""diffusers' cache hooks as bench peers: applied where diffusers supports them, refused clearly
elsewhere, exact at their exact settings, and gone after remove()."""

import numpy as np
import pytest
from conftest import run

from ditaccel import AcceleratedPipeline

SUPPORTED = ["tiny-random-flux", "tiny-random-qwen-image", "tiny-random-wan"]
EXACT = ["peer-fbcache:threshold=0", "peer-taylorseer:cache_interval=1,disable_cache_before_step=0"]


@pytest.mark.parametrize("name", SUPPORTED)
def test_peers_at_exact_settings_match_the_plain_pipeline(name, make_pipe):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=5)
    for spec in EXACT:
        accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        assert np.array_equal(run(accelerated, name, steps=5), plain), spec
        accelerated.remove()
    assert np.array_equal(run(pipe, name, steps=5), plain)


def test_peers_cache_when_allowed(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=6)
    for spec in ("peer-fbcache:threshold=10", "peer-taylorseer:cache_interval=3,disable_cache_before_step=1",
                 "peer-magcache:num_inference_steps=6,threshold=10,retention_ratio=0"):  # fmt: skip
        accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        assert not np.array_equal(run(accelerated, name, steps=6), plain), spec
        accelerated.remove()
        assert not pipe.transformer.is_cache_enabled
    assert np.array_equal(run(pipe, name, steps=6), plain)


@pytest.mark.parametrize(
    ("name", "spec", "message"),
    [
        ("tiny-random-sd3", "peer-fbcache", "no diffusers cache support"),
        ("tiny-random-pixart", "peer-taylorseer", "no diffusers cache support"),
        ("tiny-random-flux-kontext", "peer-fbcache", "does not set a cache_context"),
        ("tiny-random-wan", "peer-magcache", "only defined for"),
    ],
)
def test_unsupported_peers_are_refused(name, spec, message, make_pipe):
    with pytest.raises(ValueError, match=message):
        AcceleratedPipeline.from_pipe(make_pipe(name), methods=spec)


def test_peers_exclude_ditaccel_caches(make_pipe):
    with pytest.raises(ValueError):
        AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), methods="peer-fbcache+deepcache")
