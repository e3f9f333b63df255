"""The tune's search on synthetic measurements (no model): the front, the goal, successive halving
keeping the front's neighbourhood, the budget, combinations; and the interval's input minimum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ditaccel.metrics.intervals import min_inputs
from ditaccel.tuning.candidates import combinations, is_step_cache, sparse_applies
from ditaccel.tuning.search import (
    Goal,
    Point,
    choose,
    front,
    keep_count,
    pareto_layers,
    rung_sizes,
    successive_halving,
    survivors,
)


def _p(spec, speedup, psnr):
    return Point(spec, speedup, psnr)


def test_front_and_layers():
    pts = [_p("a", 1.0, 50), _p("b", 2.0, 40), _p("c", 1.5, 38), _p("d", 3.0, 30), _p("e", 1.2, 30)]
    assert [p.spec for p in front(pts)] == ["a", "b", "d"]
    layers = pareto_layers(pts)
    assert [[p.spec for p in layer] for layer in layers] == [["a", "b", "d"], ["c"], ["e"]]


@pytest.mark.parametrize(
    ("goal", "spec", "reached"),
    [
        (Goal(target_speedup=2.0), "b", True),  # best PSNR at >= 2x (not the faster d)
        (Goal(target_speedup=5.0), "d", False),  # none reaches: the fastest, said so
        (Goal(min_psnr=39.0), "b", True),  # fastest at >= 39 dB
        (Goal(min_psnr=60.0), "a", False),  # none reaches: the best
    ],
)
def test_choose(goal, spec, reached):
    pts = [_p("a", 1.0, 50), _p("b", 2.0, 40), _p("c", 1.5, 38), _p("d", 3.0, 30)]
    choice = choose(pts, goal)
    assert (choice.point.spec, choice.reached) == (spec, reached)
    if not reached:
        assert "no candidate reached" in choice.note and "closest" in choice.note


def test_whole_front_recommends_the_knee():
    pts = [_p("slow", 1.0, 60), _p("knee", 2.0, 55), _p("fast", 2.2, 20)]
    assert choose(pts, Goal()).point.spec == "knee"


def test_goal_is_validated():
    with pytest.raises(ValueError, match="not both"):
        Goal(target_speedup=2, min_psnr=30)
    with pytest.raises(ValueError, match="> 0"):
        Goal(target_speedup=0)


def test_rung_sizes_and_interval_minimum():
    assert rung_sizes(8) == [3, 8]
    assert rung_sizes(8, eta=2) == [2, 4, 8]
    assert rung_sizes(2) == [2]
    assert rung_sizes(27) == [3, 9, 27]
    assert min_inputs(0.9) == 4  # C(7, 4) = 35 >= 20 resamples; C(5, 3) = 10 is not
    assert min_inputs(0.5) == 3


def test_survivors_keep_whole_layers_nearest_the_goal():
    pts = [_p("a", 1.0, 50), _p("b", 2.0, 40), _p("d", 3.0, 30), _p("c", 1.9, 38), _p("e", 1.2, 30)]
    # front first (a, b, d), nearest the 2x target first; then the next layer's nearest (c)
    assert survivors(pts, 2, Goal(target_speedup=2.0)) == ["b", "d"]
    assert survivors(pts, 4, Goal(target_speedup=2.0)) == ["b", "d", "a", "c"]


def _synthetic_world(count: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """True (speedup, PSNR) of ``count`` candidates: a concave front and points below it."""
    rng = np.random.default_rng(seed)
    world = {}
    for i in range(count):
        speedup = 1.0 + 3.0 * rng.random()
        world[f"c{i}"] = (speedup, 60.0 - 10.0 * speedup - 8.0 * rng.random())
    return world


def _measure(world, calls, noise=1.0, seed=1):
    rng = np.random.default_rng(seed)

    def measure(specs, rung, count):
        calls.append((rung, count, list(specs)))
        scale = noise / math.sqrt(count)  # fewer inputs, noisier
        return {
            s: Point(s, world[s][0] * (1 + 0.02 * scale * rng.standard_normal()), world[s][1] + scale * rng.standard_normal())
            for s in specs
        }  # fmt: skip

    return measure


@pytest.mark.parametrize("target", [1.5, 2.0, 3.0])
def test_successive_halving_finds_the_point_of_the_front(target):
    world = _synthetic_world(30)
    truth = choose([Point(s, *v) for s, v in world.items()], Goal(target_speedup=target)).point.spec
    calls = []
    result = successive_halving(list(world), [3, 9, 27], _measure(world, calls), Goal(target_speedup=target))
    assert result.complete and result.final == 2
    assert result.choice.point.spec == truth
    # with a goal each rung keeps a third of the front measured before it (at least 2), not of all
    kept = [max(2, math.ceil(len(front(list(result.rungs[i].values()))) / 3)) for i in (0, 1)]
    assert [len(c[2]) for c in calls] == [30, *kept] and kept[0] < 10
    assert set(calls[2][2]) <= set(calls[1][2]) <= set(calls[0][2])


def test_the_neighbourhood_saves_a_point_noise_pushed_off_the_front():
    """Whole-front search: on the first rung the knee measures dominated (noise); being in the
    front's next layer and nearest the knee, it is measured again and chosen (the other dominated
    points are not)."""
    world = {"best": (2.1, 40.0), "decoy": (2.2, 38.0), "slow": (1.2, 50.0), "far": (3.0, 20.0)}
    world.update({"bad1": (1.1, 30.0), "bad2": (1.5, 25.0), "bad3": (1.3, 28.0), "bad4": (1.05, 45.0)})
    first = {"best": (2.1, 37.5)}  # measured worse than decoy on 2 inputs

    def measure(specs, rung, count):
        return {s: Point(s, *(first.get(s, world[s]) if rung == 0 else world[s])) for s in specs}

    result = successive_halving(list(world), [2, 8], measure, Goal(), eta=2)
    assert result.choice.point.spec == "best"
    assert set(result.rungs[1]) == {"slow", "decoy", "far", "best"}


def test_a_goal_keeps_a_share_of_the_front_not_of_everything():
    front_points = [_p("a", 1.0, 50), _p("b", 2.0, 40), _p("c", 3.0, 30)]
    below = [_p(f"x{i}", 1.0 + 0.1 * i, 20 - i) for i in range(9)]  # all dominated
    points = front_points + below
    assert keep_count(points, 3, Goal()) == 4  # the whole front: a third of all 12
    assert keep_count(points, 3, Goal(target_speedup=2.0)) == 2  # a third of the front of 3, at least 2
    assert keep_count(points, 2, Goal(min_psnr=35)) == 2
    assert keep_count(points[:1], 3, Goal(min_psnr=35)) == 1  # never more than there are
    assert survivors(points, keep_count(points, 3, Goal(target_speedup=2.0)), Goal(target_speedup=2.0)) == [
        "b",
        "c",
    ]


def test_a_goal_measures_again_what_its_noise_may_lift_over_the_line():
    """Screened at 1.9x and dominated there, ``near`` may truly reach 2x within its noise, and then
    it beats the best point that surely reaches it: with its noise it goes on right after that one;
    without noise (or too far below) Pareto order keeps the point that dominates it instead."""
    safe, near = Point("safe", 2.5, 40.0, speedup_sigma=0.04), Point("near", 1.9, 45.0, speedup_sigma=0.04)
    others = [Point("fast", 3.0, 30.0), Point("slow", 1.2, 55.0), Point("over", 1.95, 50.0)]
    goal, z = Goal(target_speedup=2.0), 1.645
    assert survivors([safe, near, *others], 2, goal, z) == ["safe", "near"]
    assert survivors([safe, near, *others], 2, goal, z=0.0) == ["safe", "over"]
    far = Point("far", 1.7, 45.0, speedup_sigma=0.04)  # 16% below: beyond 1.645 standard errors
    assert survivors([safe, far, *others], 2, goal, z) == ["safe", "over"]
    knee = Point("knee", 1.95, 49.0, speedup_sigma=0.04)  # as likely to reach 2x, and better still
    assert survivors([safe, near, knee, *others], 3, goal, z) == ["safe", "knee", "near"]
    # a PSNR goal the same way round: "close" may reach 40 dB, and it is faster than "sure"
    sure, close = Point("sure", 1.5, 44.0, psnr_sigma=1.0), Point("close", 2.4, 39.0, psnr_sigma=1.0)
    points = [sure, close, Point("over", 2.5, 39.5), Point("low", 3.0, 30.0), Point("best", 1.1, 60.0)]
    assert survivors(points, 2, Goal(min_psnr=40.0), z) == ["sure", "close"]
    assert survivors(points, 2, Goal(min_psnr=40.0), 0.0) == ["sure", "over"]
    # where nothing surely reaches the goal, the one nearest it leads
    assert survivors([near, others[1]], 1, goal, z) == ["near"]


def test_screening_noise_is_read_from_the_passes():
    """A screening row's speedup noise: the spread of its per-input ratios plus twice the drift of
    a pass's mean time between the plain pipeline's passes (one per group); its PSNR noise: the
    delta-method standard error of the pooled MSE."""
    from ditaccel.tuning.run import _point, pass_drift

    plain_a, plain_b = [1.0, 2.0, 3.0], [1.1, 2.2, 3.3]  # the second plain pass 10% slower throughout
    rows = [
        {"method": "x", "speedup": 2.0, "psnr_db": 40.0, "screening": True, "plain_wall_per_input": plain_a,
         "wall_per_input": [0.5, 1.0, 1.5], "mse_per_input": [1e-4, 1e-4, 1e-4]},
        {"method": "y", "speedup": 2.0, "psnr_db": 40.0, "screening": True, "plain_wall_per_input": plain_b,
         "wall_per_input": [0.5, 1.2, 1.5], "mse_per_input": [1e-4, 2e-4, 3e-4]},
    ]  # fmt: skip
    drift = pass_drift(rows)
    assert drift == pytest.approx(0.5 * math.log(1.1) ** 2)  # two passes: ddof=1 variance
    assert pass_drift(rows[:1]) == 0.0 and pass_drift([{**rows[0], "screening": False}, rows[1]]) == 0.0
    x, y = _point(rows[0], drift), _point(rows[1], drift)
    assert x.speedup_sigma == pytest.approx(math.sqrt(2 * drift)) and x.psnr_sigma == 0.0
    ratios = np.log(np.array(plain_b) / np.array([0.5, 1.2, 1.5]))
    assert y.speedup_sigma == pytest.approx(math.sqrt(ratios.var(ddof=1) / 3 + 2 * drift))
    assert y.psnr_sigma == pytest.approx(10 / math.log(10) * np.std([1, 2, 3], ddof=1) / (2 * math.sqrt(3)))
    final = _point({**rows[1], "screening": False}, drift)  # a last-rung row: no band
    assert final.speedup_sigma == 0.0 and final.psnr_sigma == 0.0


def test_budget_stops_and_recommends_from_the_deepest_complete_rung():
    world = _synthetic_world(9)

    def measure(specs, rung, count):
        kept = specs if rung == 0 else specs[:1]  # the budget runs out within rung 2
        return {s: Point(s, *world[s]) for s in kept}

    result = successive_halving(list(world), [3, 9], measure, Goal(target_speedup=2.0))
    assert not result.complete and result.final == 0
    assert any("budget ran out" in n for n in result.notes)
    assert any("re-run with the same --out" in n for n in result.notes)


def test_failed_candidates_are_answered_not_waited_for():
    world = _synthetic_world(6)

    def measure(specs, rung, count):
        return {s: (None if s == "c0" else Point(s, *world[s])) for s in specs}

    result = successive_halving(list(world), [2, 6], measure, Goal(min_psnr=30.0), eta=2)
    assert result.complete and "c0" in result.failed and "c0" not in result.rungs[0]


def test_extend_adds_combinations_on_the_first_rung():
    points = {
        "deepcache:interval=2": Point("deepcache:interval=2", 1.5, 45),
        "deepcache:interval=4": Point("deepcache:interval=4", 1.3, 40),  # dominated: not combined
        "region-edit:source=mask": Point("region-edit:source=mask", 2.0, 38),
        "context-prune:keep=0.5,pivotal=2": Point("context-prune:keep=0.5,pivotal=2", 1.2, 44),
        "block-external:refresh=4,mode=kv": Point("block-external:refresh=4,mode=kv", 1.1, 46),
    }
    combined = combinations(points)
    # context-prune composes with region-edit only; block-external with any step cache
    assert "region-edit:source=mask+context-prune:keep=0.5,pivotal=2" in combined
    assert "deepcache:interval=2+block-external:refresh=4,mode=kv" in combined
    assert "deepcache:interval=2+context-prune:keep=0.5,pivotal=2" not in combined
    assert not any(c.startswith("deepcache:interval=4") for c in combined)
    assert is_step_cache("region-edit:source=mask") and not is_step_cache("context-prune:keep=0.5")

    calls = []

    def measure(specs, rung, count):
        calls.append(list(specs))
        return {s: Point(s, 1.0 + len(s) / 100, 40.0) for s in specs}

    successive_halving(list(points), [2], measure, Goal(), extend=lambda pts: combinations(points))
    assert calls[1] == combined


def test_sparse_attention_joins_only_when_it_can_skip_a_block():
    assert not sparse_applies(64, 0.5)  # one block of 64: nothing to skip
    assert not sparse_applies(None, 0.5)
    assert sparse_applies(528, 0.5) and sparse_applies(4096, 0.25)


def test_front_plot_draws_intervals_of_identical_images(tmp_path):
    """An exact setting (infinite PSNR, its interval too) and a point estimate outside its own
    percentile interval still plot (error bars are never negative)."""
    from ditaccel.tuning.report import front_plot

    rows = [
        {"method": "a", "speedup": 1.2, "psnr_db": float("inf"), "inputs": 8, "on_front": True},
        {"method": "b", "speedup": 2.1, "psnr_db": 40.0, "inputs": 8, "on_front": True},
    ]
    best = {**rows[0], "psnr_interval": [float("inf"), float("inf")], "speedup_interval": [1.25, 1.3]}
    report = {
        "model": "m", "task": "t2i", "steps": 4, "device": "cpu", "results": rows, "front": rows,
        "recommended": best, "goal": Goal(target_speedup=1.1).to_dict(),
        "rungs": [{"inputs": 3, "runs": 1, "measured": rows}, {"inputs": 8, "runs": 3, "measured": rows}],
    }  # fmt: skip
    assert front_plot(report, tmp_path / "front.png").stat().st_size > 0
