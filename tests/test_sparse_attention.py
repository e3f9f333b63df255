"""``sparse-attention``: block-mask prediction, routing attention through the block-sparse kernel
on every family, exact at density 1, per-layer densities from a profile."""

import math

import numpy as np
import pytest
import torch
from conftest import run

from ditaccel import AcceleratedPipeline
from ditaccel.attention import MaskRule, predict_block_mask, token_blocks
from ditaccel.calibration import Profile
from ditaccel.calibration.planner import attention_allocation
from ditaccel.calibration.profile import fingerprint
from ditaccel.hooks.block_range import flat_blocks
from ditaccel.methods.sparse_attention import SparseAttentionConfig
from ditaccel.testing import TINY_MODELS

DENSE = "sparse-attention:density=1,block=16,dense_steps=0,dense_layers=0"


# --- mask prediction ------------------------------------------------------------------------------


def _qk(length=128, dim=16, heads=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, heads, length, dim, generator=g), torch.randn(1, heads, length, dim, generator=g)


def test_topk_keeps_the_share_plus_diagonal():
    q, k = _qk()
    rule = MaskRule("topk", density=0.25, min_similarity=-1.0)
    mask = predict_block_mask(q, k, rule, block_q=16, block_k=16)
    keep = mask.to_dense()
    assert keep.shape == (1, 2, 8, 8)
    assert torch.all(keep.diagonal(dim1=-2, dim2=-1))
    # two blocks by score, plus the diagonal when it is not among them
    assert torch.all((keep.sum(-1) >= 2) & (keep.sum(-1) <= 3))


def test_topk_follows_the_pooled_scores():
    """A key block aligned with a query block's mean wins the query block's attention."""
    q = torch.zeros(1, 1, 64, 8)
    k = torch.randn(1, 1, 64, 8, generator=torch.Generator().manual_seed(1)) * 0.01
    q[..., :16, 0] = 5.0  # query block 0 looks along axis 0
    k[..., 48:, 0] += 5.0  # key block 3 lies along axis 0
    rule = MaskRule("topk", density=0.25, min_similarity=-1.0)
    keep = predict_block_mask(q, k, rule, block_q=16, block_k=16).to_dense()
    assert keep[0, 0, 0].tolist() == [True, False, False, True]


def test_mass_mode_keeps_more_blocks_for_more_mass():
    q, k = _qk(seed=2)
    counts = []
    for mass in (0.3, 0.6, 1.0):
        rule = MaskRule("mass", mass=mass, min_similarity=-1.0)
        counts.append(predict_block_mask(q, k, rule, block_q=16, block_k=16).count)
    assert torch.all(counts[0] <= counts[1]) and torch.all(counts[1] <= counts[2])
    assert counts[0].max() < 8 and torch.all(counts[2] == 8)


def test_unreliable_and_forced_blocks_are_kept():
    q, k = _qk(length=64)
    rule = MaskRule("topk", density=0.25, min_similarity=1.0)  # random tokens are far from that self-similar
    assert torch.all(predict_block_mask(q, k, rule, block_q=16, block_k=16).to_dense())
    rule = MaskRule("topk", density=0.25, min_similarity=-1.0)
    forced = token_blocks(0, 20, 64, 16)
    assert forced.tolist() == [True, True, False, False]
    keep = predict_block_mask(
        q, k, rule, block_q=16, block_k=16, keep_queries=forced, keep_keys=forced
    ).to_dense()
    assert torch.all(keep[..., :2, :]) and torch.all(keep[..., :, :2])


def test_mask_rule_validation():
    with pytest.raises(ValueError, match="density"):
        MaskRule(density=0.0)
    with pytest.raises(ValueError, match="mass"):
        MaskRule(mass=1.5)


# --- the method -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY_MODELS)
def test_density_one_is_the_plain_pipeline(name, make_pipe):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=2)
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods=DENSE)
    out = run(accelerated, name, steps=2)
    np.testing.assert_allclose(out, plain, atol=2e-5)
    stats = accelerated.stats.to_dict()
    layers = {
        site.name
        for d in accelerated.adapter.denoisers()
        for site in accelerated.adapter.sequence_attention_sites(d)
    }
    assert set(stats["attention_density_by_layer"]) == layers  # every layer went through the kernel
    assert stats["attention_density"] == 1.0
    accelerated.remove()
    assert np.array_equal(run(pipe, name, steps=2), plain)


def test_sparse_masks_skip_blocks_and_report_density(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=3, height=64, width=64)  # 64 image tokens + text
    spec = "sparse-attention:density=0.25,block=16,dense_steps=1,dense_layers=1,min_similarity=-1,keep_text=false"
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    out = run(accelerated, name, steps=3, height=64, width=64)
    by_layer = accelerated.stats.attention_density_by_layer()
    first, *rest = by_layer.values()
    assert first == 1.0  # dense layer
    assert all(d < 1.0 for d in rest)
    assert accelerated.stats.realised_attention_density() < 1.0
    assert np.isfinite(out).all() and not np.array_equal(out, plain)


def test_text_blocks_stay_dense(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    spec = "sparse-attention:density=0.25,block=16,dense_steps=0,dense_layers=0,min_similarity=-1"
    with_text = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    run(with_text, name, steps=2, height=64, width=64)
    kept = with_text.stats.realised_attention_density()
    with_text.remove()
    without = AcceleratedPipeline.from_pipe(pipe, methods=spec + ",keep_text=false")
    run(without, name, steps=2, height=64, width=64)
    assert kept > without.stats.realised_attention_density()


def test_combines_with_deepcache(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods="deepcache:interval=2+" + DENSE)
    cached_only = AcceleratedPipeline.from_pipe(make_pipe(name), methods="deepcache:interval=2")
    np.testing.assert_allclose(run(accelerated, name, steps=4), run(cached_only, name, steps=4), atol=2e-5)
    assert accelerated.stats.blocks_reused > 0


def test_head_densities_keep_their_own_share():
    q, k = _qk(heads=2)
    rule = MaskRule("topk", density=0.5, min_similarity=-1.0, head_density=(0.25, 1.0))
    keep = predict_block_mask(q, k, rule, block_q=16, block_k=16).to_dense()
    assert torch.all((keep[0, 0].sum(-1) >= 2) & (keep[0, 0].sum(-1) <= 3))  # 2 of 8, plus the diagonal
    assert torch.all(keep[0, 1])
    with pytest.raises(ValueError, match="3 head densities for 2 heads"):
        predict_block_mask(q, k, MaskRule(head_density=(0.5, 0.5, 0.5)), block_q=16, block_k=16)


def _attention_profile(pipe, tmp_path, by_head):
    """A calibration profile of ``pipe``'s model whose attention needs are ``by_head`` per layer."""
    denoiser = pipe.adapter.denoisers()[0]
    blocks = [b.name for b in flat_blocks(pipe.adapter, denoiser)]
    layers = [site.name for site in pipe.adapter.sequence_attention_sites(denoiser)]
    profile = Profile(
        model="tiny", pipeline=type(pipe.pipeline).__name__, steps=2, prompts=1, blocks=blocks,
        block_change=[[0.0] * len(blocks)] * 2, block_change_cv=[[0.0] * len(blocks)] * 2,
        fingerprint=fingerprint(denoiser.config), attention_layers=layers,
        attention=[float(np.mean(h)) for h in by_head(len(layers))],
        attention_by_head=by_head(len(layers)),
    )  # fmt: skip
    return profile.save(tmp_path / "p.json")


def test_profile_shares_the_density_budget_by_measured_need(make_pipe, tmp_path):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    probe = AcceleratedPipeline.from_pipe(pipe, methods=[])
    heads = pipe.transformer.config.num_attention_heads
    path = _attention_profile(probe, tmp_path, lambda n: [[0.2] * (heads - 1) + [0.8]] * n)
    probe.remove()
    budget = "block=16,dense_steps=0,dense_layers=0,min_similarity=-1"
    exact = AcceleratedPipeline.from_pipe(pipe, methods=f"sparse-attention:density=1,{budget},profile={path}")
    np.testing.assert_allclose(run(exact, name), run(make_pipe(name), name), atol=2e-5)
    exact.remove()
    sparse = AcceleratedPipeline.from_pipe(
        pipe, methods=f"sparse-attention:density=0.3,{budget},profile={path}"
    )
    route = (
        pipe.transformer.transformer_blocks[0]
        .attn._diffusers_hook.get_hook("ditaccel.sparse_attention")
        .handler
    )
    shares = route.rule.head_density
    assert shares[-1] == pytest.approx(4 * shares[0]) and np.mean(shares) == pytest.approx(0.3)
    out = run(sparse, name, steps=3, height=64, width=64)  # 64 image tokens: 4+ key blocks per row
    by_layer = sparse.stats.attention_density_by_layer()
    assert all(d < 1.0 for d in by_layer.values()) and np.isfinite(out).all()
    sparse.remove()
    # the same budget with every head alike keeps a different set of blocks
    uniform = AcceleratedPipeline.from_pipe(pipe, methods=f"sparse-attention:density=0.3,{budget}")
    assert not np.array_equal(run(uniform, name, steps=3, height=64, width=64), out)
    uniform.remove()
    other = AcceleratedPipeline.from_pipe(make_pipe("tiny-random-sd3"), methods=[])
    wrong = _attention_profile(other, tmp_path, lambda n: [[0.5]] * n)
    with pytest.raises(ValueError, match="another model"):
        AcceleratedPipeline.from_pipe(make_pipe(name), methods=f"sparse-attention:profile={wrong}")
    with pytest.raises(ValueError, match="mode=topk"):
        SparseAttentionConfig(mode="mass", profile=path)


def test_profile_head_counts_and_dense_layers(make_pipe, tmp_path):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    probe = AcceleratedPipeline.from_pipe(pipe, methods=[])
    heads = pipe.transformer.config.num_attention_heads
    short = _attention_profile(probe, tmp_path, lambda n: [[0.5] * (heads + 1)] * n)
    with pytest.raises(ValueError, match=f"has {heads} heads"):
        AcceleratedPipeline.from_pipe(make_pipe(name), methods=f"sparse-attention:profile={short}")
    path = _attention_profile(probe, tmp_path, lambda n: [[0.5] * heads] * n)
    probe.remove()
    accelerated = AcceleratedPipeline.from_pipe(
        pipe, methods=f"sparse-attention:density=0.3,dense_layers=1,profile={path}"
    )
    routes = [
        site.module._diffusers_hook.get_hook("ditaccel.sparse_attention").handler
        for site in accelerated.adapter.sequence_attention_sites(pipe.transformer)
    ]
    assert routes[0].rule.head_density == ()  # a dense layer takes no share of the budget
    assert all(r.rule.head_density == pytest.approx((0.3,) * heads) for r in routes[1:])


def test_attention_allocation_caps_at_one_and_keeps_the_mean():
    profile = Profile(
        model="m", pipeline="P", steps=1, prompts=1, blocks=["a"], block_change=[[0.0]],
        block_change_cv=[[0.0]], attention_layers=["l0", "l1"], attention=[0.5, 0.5],
        attention_by_head=[[0.9, 0.1], [0.5, 0.5]],
    )  # fmt: skip
    shares = attention_allocation(profile, 0.6)
    assert shares["l0"][0] == 1.0  # 0.9 / 0.5 * 0.6 > 1: capped, its surplus spread over the rest
    flat = [x for heads in shares.values() for x in heads]
    assert np.mean(flat) == pytest.approx(0.6, abs=1e-6)
    assert shares["l1"][0] == pytest.approx(5 * shares["l0"][1], rel=1e-5)
    assert all(x == 1.0 for heads in attention_allocation(profile, 1.0).values() for x in heads)


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match="power of two"):
        SparseAttentionConfig(block=24)
    with pytest.raises(ValueError, match="density"):
        SparseAttentionConfig(density=0)
    with pytest.raises(ValueError, match="does not exist"):
        SparseAttentionConfig(profile=tmp_path / "missing.json")
    assert math.isclose(SparseAttentionConfig.from_params({"density": "0.3"}).density, 0.3)


def test_refresh_one_is_dense_through_split_and_merge(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=3, height=64, width=64)
    spec = "sparse-attention:density=0.25,refresh=1,block=16,dense_steps=0,dense_layers=0,min_similarity=-1"
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    np.testing.assert_allclose(run(accelerated, name, steps=3, height=64, width=64), plain, atol=2e-5)
    assert accelerated.stats.realised_attention_density() == 1.0


def test_refresh_serves_the_masked_blocks_between_refreshes(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    spec = "sparse-attention:density=0.25,refresh=2,block=16,dense_steps=0,dense_layers=0,min_similarity=-1,keep_text=false"
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    out = run(accelerated, name, steps=4, height=64, width=64)
    density = accelerated.stats.realised_attention_density()
    # steps 0 and 2 refresh (every block), steps 1 and 3 visit the masked blocks only
    assert 0.5 < density < 1.0
    assert np.isfinite(out).all()
    # a new call starts without the previous call's cache: the same output again
    np.testing.assert_array_equal(run(accelerated, name, steps=4, height=64, width=64), out)
