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
        ("tiny-random-wan", "peer-magcache", "FLUX.1 only; calibrate"),
    ],
)
def test_unsupported_peers_are_refused(name, spec, message, make_pipe):
    with pytest.raises(ValueError, match=message):
        AcceleratedPipeline.from_pipe(make_pipe(name), methods=spec)


def test_peers_exclude_ditaccel_caches(make_pipe):
    with pytest.raises(ValueError):
        AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), methods="peer-fbcache+deepcache")


def _with_ratios(pipe, tmp_path, ratios):
    """A calibration profile of ``pipe``'s transformer holding ``ratios`` as its magnitude ratios."""
    from ditaccel.calibration.profile import Profile, fingerprint
    from ditaccel.hooks.block_range import flat_blocks

    probe = AcceleratedPipeline.from_pipe(pipe, methods=[])
    denoiser = probe.adapter.denoisers()[0]
    blocks = [b.name for b in flat_blocks(probe.adapter, denoiser)]
    probe.remove()
    zeros = [[0.0] * len(blocks) for _ in ratios]
    profile = Profile(model="tiny", pipeline=type(pipe).__name__, steps=len(ratios), prompts=1, blocks=blocks,
                      block_change=zeros, block_change_cv=zeros, fingerprint=fingerprint(denoiser.config),
                      mag_ratios=list(ratios))  # fmt: skip
    return profile.save(tmp_path / f"ratios{ratios[1]}.json")


@pytest.mark.parametrize("name", ["tiny-random-flux", "tiny-random-wan"])
def test_magcache_gates_on_the_profiles_calibrated_ratios(name, make_pipe, tmp_path):
    """Ratios of 1 (nothing changes) let MagCache skip every step after the retained ones; ratios of
    3 never let it skip: the ratios it gates on are the profile's, on any family with cache hooks."""
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=6)
    spec = "peer-magcache:num_inference_steps=6,threshold=0.5,retention_ratio=0.2,ratios=profile,profile={}"
    still = AcceleratedPipeline.from_pipe(pipe, methods=spec.format(_with_ratios(pipe, tmp_path, [1.0] * 6)))
    assert not np.array_equal(run(still, name, steps=6), plain)
    still.remove()
    moving = AcceleratedPipeline.from_pipe(pipe, methods=spec.format(_with_ratios(pipe, tmp_path, [3.0] * 6)))
    assert np.array_equal(run(moving, name, steps=6), plain)
    moving.remove()


def test_magcache_without_ratios_in_the_profile_is_refused(make_pipe, tmp_path):
    pipe = make_pipe("tiny-random-flux")
    path = _with_ratios(pipe, tmp_path, [1.0] * 4)
    from ditaccel.calibration.profile import Profile

    profile = Profile.load(path)
    profile.mag_ratios = []
    profile.save(path)
    with pytest.raises(ValueError, match="ratios=profile needs magnitude ratios"):
        AcceleratedPipeline.from_pipe(pipe, methods=f"peer-magcache:ratios=profile,profile={path}")


def test_cache_dit_dbcache_is_exact_at_threshold_zero_and_leaves_nothing_behind(make_pipe):
    """peer-dbcache (cache-dit): threshold 0 never serves; a serving run differs; after any number
    of enable / remove rounds the pipeline class and the transformer are as before (cache-dit
    patches both and does not restore the transformer's forward by itself)."""
    pytest.importorskip("cache_dit")
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=6)
    call, forward = type(pipe).__call__, pipe.transformer.forward
    exact = AcceleratedPipeline.from_pipe(pipe, methods="peer-dbcache:Fn=1,threshold=0,warmup=0")
    assert np.array_equal(run(exact, name, steps=6), plain)
    exact.remove()
    for _ in range(3):
        serving = AcceleratedPipeline.from_pipe(pipe, methods="peer-dbcache:Fn=1,threshold=10,warmup=1")
        assert not np.array_equal(run(serving, name, steps=6), plain)
        serving.remove()
        assert type(pipe).__call__ is call and pipe.transformer.forward == forward
    assert np.array_equal(run(pipe, name, steps=6), plain)


def test_peer_dbcache_without_cache_dit_names_the_install(make_pipe, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "cache_dit" else real(n, *a))
    with pytest.raises(ValueError, match=r'pip install "ditaccel\[peers\]"'):
        AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), methods="peer-dbcache")
