"""PSNR / SSIM on images, arrays and videos; FLOPs counted, attention included."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import run
from PIL import Image

from ditaccel.metrics import attention_flops, count_flops, psnr, report_flops, ssim
from ditaccel.metrics.flops import discount_flops


def test_psnr_known_values():
    a = np.zeros((16, 16, 3))
    assert math.isinf(psnr(a, a))
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
    mask = np.zeros((16, 16), dtype=bool)
    mask[:8] = True
    b = a.copy()
    b[8:] = 0.5  # differs only outside the mask
    assert math.isinf(psnr(a, b, mask=mask))
    with pytest.raises(ValueError, match="shapes"):
        psnr(a, np.zeros((8, 8, 3)))


def test_uint8_pil_and_float_agree():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    y = np.clip(x.astype(int) + 10, 0, 255).astype(np.uint8)
    assert psnr(Image.fromarray(x), Image.fromarray(y)) == pytest.approx(psnr(x / 255.0, y / 255.0))


def test_ssim():
    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 16, 3))  # a batch / video of two frames
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, rng.random((2, 16, 16, 3))) < 0.5
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))


@pytest.mark.parametrize(("b", "h", "lq", "lk", "d"), [(1, 2, 10, 10, 8), (2, 3, 7, 19, 16)])
def test_one_attention_call_counts_4bhlqlkd(b, h, lq, lk, d):
    q, k, v = torch.randn(b, h, lq, d), torch.randn(b, h, lk, d), torch.randn(b, h, lk, d)
    with count_flops() as counted:
        F.scaled_dot_product_attention(q, k, v)
    assert counted.total == counted.attention == 4 * b * h * lq * lk * d == attention_flops(b, h, lq, lk, d)
    mask = torch.rand(lq, lk) > 0.5
    with count_flops() as masked:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert masked.attention == 4 * b * h * lq * lk * d


def test_linear_and_reported_flops():
    layer = torch.nn.Linear(8, 16)
    with count_flops() as outer:
        layer(torch.randn(4, 8))
        with count_flops() as inner:
            report_flops(1000, attention=True)
    assert (inner.total, inner.attention) == (1000, 1000)
    assert (outer.total, outer.attention) == (2 * 4 * 8 * 16 + 1000, 1000)


def test_counting_does_not_change_outputs(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    plain = run(pipe, name)
    with count_flops() as counted:
        counted_out = run(pipe, name)
    assert np.array_equal(plain, counted_out)
    assert counted.attention > 0 and counted.total > counted.attention
    with count_flops([pipe.transformer]) as transformer_only:
        run(pipe, name, steps=2)
    # text encoders and VAE left out: per step, 4 blocks each attend over 32 text + 16 image tokens
    config = pipe.transformer.config
    blocks, tokens = config.num_layers + config.num_single_layers, 32 + 16
    per_block = attention_flops(1, config.num_attention_heads, tokens, tokens, config.attention_head_dim)
    assert transformer_only.attention == 2 * blocks * per_block
    assert transformer_only.attention < counted.attention and transformer_only.total < counted.total


class _KernelUser(torch.nn.Module):
    """Stands for a module whose custom kernel reports its own FLOPs."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)

    def forward(self, x):
        report_flops(5, attention=True)
        return self.proj(x)


def test_scoped_count_includes_reported_flops_only_inside_the_module():
    module = _KernelUser()
    with count_flops([module]) as counted:
        report_flops(7)  # outside the module's forward: not counted
        module(torch.randn(1, 4))
    assert (counted.total, counted.attention) == (2 * 4 * 4 + 5, 5)


def test_nested_counts_each_see_their_part_and_discounts_come_off():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    one = 2 * 2 * 8 * 8  # one linear on a batch of 2
    with count_flops([model]) as outer, count_flops([model[0]]) as inner:
        # a measuring tool's own work inside model[0]'s forward, taken back out of both counts
        handle = model[0].register_forward_pre_hook(lambda *_: discount_flops(10))
        model(torch.randn(2, 8))
        handle.remove()
    assert (outer.total, inner.total) == (2 * one - 10, one - 10)


def test_flop_count_survives_a_module_graph_with_a_cycle():
    """cache-dit's cached blocks hold their transformer as a child: torch's module tracker recursed
    forever on such a graph inside count_flops."""
    from ditaccel.metrics import count_flops

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)
            self.inner = torch.nn.Module()
            self.inner.owner = self  # the cycle

        def forward(self, x):
            return self.linear(x)

    with count_flops() as counted:
        Holder()(torch.randn(2, 4))
    assert counted.total == 2 * 2 * 4 * 4


def test_pooled_psnr_intervals_cover_the_estimate_and_separate_only_consistent_gains():
    from ditaccel.metrics.intervals import front_difference, pooled_psnr, psnr_difference

    rng = np.random.default_rng(1)
    base = rng.uniform(1e-5, 1e-4, 8)
    assert math.isclose(float(pooled_psnr(base)), 10 * math.log10(1 / base.mean()))
    assert float(pooled_psnr(np.zeros(3))) == 99.0  # exact: capped, not infinite
    # half the error on every input: a gain of 10*log10(2) dB, resampling cannot undo it
    low, high = psnr_difference(base / 2, base)
    assert low == pytest.approx(10 * math.log10(2)) and high == pytest.approx(low)
    # one input breaks: the pooled estimate falls, the interval spans both stories
    broken = base.copy()
    broken[3] *= 400
    estimate = float(pooled_psnr(base / 2) - pooled_psnr(broken))
    low, high = psnr_difference(base / 2, broken)
    assert low <= estimate <= high and high - low > 5
    # against a front halfway between two rows: the mean of their PSNRs
    gap = float(pooled_psnr(base) - (pooled_psnr(base * 2) + pooled_psnr(base / 2)) / 2)
    low, high = front_difference(base, base * 2, base / 2, 0.5)
    assert low == pytest.approx(gap, abs=1e-9) and high == pytest.approx(gap, abs=1e-9)
    with pytest.raises(ValueError, match="paired"):
        psnr_difference(base, base[:4])
