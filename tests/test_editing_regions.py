"""Region-aware editing building blocks: the edited-token partition, mask / high-frequency token
selection and the velocity cache."""

import numpy as np
import pytest
import torch
from PIL import Image

from ditaccel.editing import (
    clean_token_mask,
    edited_tokens,
    high_frequency_tokens,
    mask_tokens,
    one_step_estimate,
    overlay,
)
from ditaccel.editing.velocity import VelocityCache


def test_one_step_estimate_lands_on_the_straight_path():
    x0, noise = torch.randn(1, 4, 3), torch.randn(1, 4, 3)
    sigma = 0.6
    xt = (1 - sigma) * x0 + sigma * noise
    velocity = noise - x0  # the flow-matching velocity of this straight path
    assert torch.allclose(one_step_estimate(xt, velocity, sigma), x0, atol=1e-6)


def test_cleaning_drops_specks_and_grows_regions():
    mask = torch.zeros(1, 64, dtype=torch.bool)
    mask[0, 9] = True  # a lone token
    grid = mask.reshape(8, 8).clone()
    grid[3:6, 3:6] = True  # a 3x3 region
    cleaned = clean_token_mask(grid.reshape(1, 64), 8, 8, erode=1, dilate=2).reshape(8, 8)
    assert not cleaned[1, 1]  # the speck is gone
    # the cross erosion leaves the region's centre (4, 4); the radius-2 dilation grows it to 5x5
    assert cleaned[2:7, 2:7].all() and cleaned.sum() == 25


def test_edited_tokens_are_those_that_turned_away_from_the_reference():
    reference = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0))
    estimate = reference.clone()
    estimate[0, 5] = -reference[0, 5]
    raw = edited_tokens(estimate, reference, 4, 4, threshold=0.9, erode=0, dilate=0)
    assert raw[0].nonzero().flatten().tolist() == [5]
    with pytest.raises(ValueError, match="threshold"):
        edited_tokens(estimate, reference, 4, 4, threshold=2.0)


def test_mask_tokens_checks_and_maps_to_the_grid():
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[0:4, 0:4] = 255
    tokens = mask_tokens(Image.fromarray(mask), (32, 32), 4, 4, dilate=0)
    assert tokens.tolist() == [True] + [False] * 15
    assert mask_tokens(mask, (32, 32), 4, 4, dilate=1).sum() == 4
    with pytest.raises(ValueError, match="empty"):
        mask_tokens(np.zeros((32, 32)), (32, 32), 4, 4)
    with pytest.raises(ValueError, match="32x32, the image 64x32"):
        mask_tokens(mask, (32, 64), 4, 4)


def test_high_frequency_tokens_pick_edges_outside_the_mask_within_budget():
    source = np.zeros((32, 32), dtype=np.float32)
    source[:, 20:] = 1.0  # one vertical edge at x=20, in token column 2
    outside = torch.ones(16, dtype=torch.bool)
    outside[2] = False  # the top token of that column is inside the mask already
    chosen = high_frequency_tokens(source, 4, 4, outside, budget=0.2)
    assert chosen.sum() == 3 and not chosen[2]
    assert set(chosen.nonzero().flatten().tolist()) == {6, 10, 14}
    assert not high_frequency_tokens(source, 4, 4, outside, budget=0.0).any()


def test_velocity_cache_reuses_within_tolerance_and_decays():
    cache = VelocityCache(tolerance=0.1, max_reuse=3)
    base = torch.ones(1, 4, 2)
    cache.record(5, base)
    assert cache.forecast(6) is None  # one record: no rate yet
    cache.record(6, base * 0.96)  # 4% change and a 0.96 decay per step
    assert torch.allclose(cache.forecast(7), base * 0.96**2)
    assert cache.forecast(8) is not None and cache.forecast(9) is None  # 3 x 4% > 10%
    cache.record(8, base * 2.0)  # a jump: the rate is now far above the tolerance
    assert cache.forecast(9) is None
    assert VelocityCache(tolerance=0.0, max_reuse=3).forecast(1) is None
    capped = VelocityCache(tolerance=10.0, max_reuse=2)
    capped.record(0, base)
    capped.record(1, base)
    assert capped.forecast(3) is not None and capped.forecast(4) is None


def test_overlay_tints_the_recomputed_tokens():
    image = Image.new("RGB", (32, 32), (0, 0, 200))
    tokens = np.zeros((4, 4), dtype=bool)
    tokens[0, 1] = True
    drawn = np.asarray(overlay(image, tokens))
    assert drawn[2, 10, 0] > 100 and drawn[2, 2, 0] == 0  # red on token (0, 1) only
    assert drawn[20, 20, 2] < 200  # the others are dimmed
    with pytest.raises(ValueError, match="grid"):
        overlay(image, np.zeros(16, dtype=bool))
