"""Caches v2: the profile's errors read on another step grid, whole-step and protected plans, plans
verified by running them, and calibrated-cache at any step count."""

import numpy as np
import pytest
import torch
from conftest import run

from ditaccel import AcceleratedPipeline
from ditaccel.calibration import PlannerConfig, Profile, Profiler, ProfilerConfig, plan_all, plan_cache
from ditaccel.calibration.error_model import ErrorModel
from ditaccel.calibration.planner import RATIO_TOLERANCE, CachePlan, nearest_plan
from ditaccel.calibration.verify import (
    GENERATORS,
    OTHER_GRID_GENERATORS,
    OTHER_GRID_ORDERS,
    recompute_to,
    verify_plans,
)
from ditaccel.testing import example_call


def _profile(steps=12, blocks=4, gap=4, seed=0) -> Profile:
    """A synthetic profile whose errors grow with the gap (as measured ones do), with sigmas."""
    g = torch.Generator().manual_seed(seed)
    gaps = torch.arange(1, gap + 1, dtype=torch.float32)
    order0 = (torch.rand(blocks, steps, 1, generator=g) + 0.1) * gaps
    order1 = (torch.rand(blocks, steps, 1, 1, generator=g) + 0.1) * gaps.view(1, 1, -1, 1) ** 2 * 0.5
    order1 = order1.expand(blocks, steps, gap, gap).contiguous()
    zeros = [[0.0] * blocks for _ in range(steps)]
    return Profile(model="m", pipeline="P", steps=steps, prompts=1, blocks=[f"b{i}" for i in range(blocks)],
                   block_change=zeros, block_change_cv=zeros, block_gflops=[1.0] * blocks,
                   forward_gflops=float(blocks), sigmas=list(np.linspace(1.0, 0.0, steps + 1)),
                   tensors={"reuse_error_order0": order0, "reuse_error_order1": order1})  # fmt: skip


def test_error_model_on_the_profiles_own_grid_is_the_profile():
    profile = _profile()
    model = ErrorModel(profile, profile.steps, profile.sigmas)
    assert np.array_equal(model.order0, profile.tensors["reuse_error_order0"].double().numpy())
    assert np.array_equal(model.order1, profile.tensors["reuse_error_order1"].double().numpy())


def test_error_model_reads_the_same_noise_levels_on_a_finer_grid():
    """On a grid with twice the steps over the same sigmas, step 2t at gap 2 is the profile's step t
    at gap 1; an odd gap lies halfway between measured gaps (linear)."""
    profile = _profile()
    steps = 2 * profile.steps
    fine = list(np.linspace(1.0, 0.0, steps + 1)[:steps]) + [0.0]
    # the profile's sigmas are linear in the step, so step 2t of the fine grid is step t of the profile
    model = ErrorModel(profile, steps, fine)
    order0 = profile.tensors["reuse_error_order0"].double().numpy()
    for t in range(1, profile.steps):
        np.testing.assert_allclose(model.order0[:, 2 * t, 1], order0[:, t, 0], rtol=1e-9)
        if t >= 2:
            np.testing.assert_allclose(model.order0[:, 2 * t, 3], order0[:, t, 1], rtol=1e-9)
    np.testing.assert_allclose(model.order0[:, 4, 0], order0[:, 2, 0] / 2, rtol=1e-9)  # half a step: half
    coarse = ErrorModel(profile, profile.steps // 2, list(np.linspace(1.0, 0.0, profile.steps // 2 + 1)))
    np.testing.assert_allclose(coarse.order0[:, 3, 0], order0[:, 6, 1], rtol=1e-9)  # one step = two
    assert coarse.max_gap == 2  # beyond the profiled gaps nothing is measured


@pytest.mark.parametrize("steps", [6, 12, 30])
def test_plans_at_any_step_count_meet_their_target(steps):
    profile = _profile()
    sigmas = list(np.linspace(1.0, 0.0, steps + 1))
    for target in (0.8, 0.6):
        plan = plan_cache(profile, PlannerConfig(flops_ratio=target), steps, sigmas)
        assert plan.steps == steps and abs(plan.flops_ratio - target) <= 0.03 + 1.0 / steps
        assert not plan.reuse[0]


def test_whole_step_and_protected_plans():
    profile = _profile()
    whole = plan_cache(profile, PlannerConfig(flops_ratio=0.6, scope="step", front=1))
    assert any(whole.reuse)
    assert all(step in ([], [1, 2, 3]) for step in whole.reuse)  # every block past the front, or none
    protected = plan_cache(profile, PlannerConfig(flops_ratio=0.6, protect=0.25))
    assert not any(protected.reuse[:3]) and any(protected.reuse[3:])
    assert protected.generator["protect"] == 0.25 and whole.generator["scope"] == "step"


@pytest.mark.parametrize("steps", [5, 7, 10, 14])
def test_whole_step_plans_on_a_coarse_grid_land_within_the_tolerance(steps):
    """A whole step of a coarse grid is more than the tolerance: the plan never passes the target by
    more than it, and finishes in (block, step) pairs where no whole step lands within it; above
    the target only where nothing more can be served (the profile's longest gap)."""
    profile = _profile()
    sigmas = list(np.linspace(1.0, 0.0, steps + 1))
    for target in (0.7, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3):
        plan = plan_cache(profile, PlannerConfig(flops_ratio=target, scope="step", front=0), steps, sigmas)
        assert plan.flops_ratio >= target - RATIO_TOLERANCE - 1e-9, (steps, target, plan.flops_ratio)
        if plan.flops_ratio > target + RATIO_TOLERANCE:  # stuck: a lower target serves nothing more
            lower = plan_cache(profile, PlannerConfig(flops_ratio=0.05, scope="step", front=0), steps, sigmas)
            assert lower.reuse == plan.reuse
        elif any(len(step) not in (0, len(profile.blocks)) for step in plan.reuse):
            whole = [t for t, step in enumerate(plan.reuse) if len(step) == len(profile.blocks)]
            assert whole  # whole steps first, pairs for the rest


def _tiny_profile(pipe, name, steps):
    calls = [example_call(name, seed=s, steps=steps) for s in (0, 1)]
    for call in calls:
        call.pop("num_inference_steps")
    wrapped = AcceleratedPipeline.from_pipe(pipe, methods=[])
    profile = Profiler(wrapped, ProfilerConfig(max_gap=3)).profile(calls, name, steps=steps)
    wrapped.remove()
    return plan_all(profile), calls


def test_verification_stores_the_best_measured_plan_and_calibrated_cache_runs_it(make_pipe, tmp_path):
    name, steps = "tiny-random-flux", 8
    pipe = make_pipe(name)
    profile, _ = _tiny_profile(pipe, name, steps)
    calls = [example_call(name, seed=s, steps=steps) for s in (0, 1)]
    records = verify_plans(pipe, calls, profile, targets=(0.7, 0.5), prompts=2)
    assert {r["target"] for r in records} == {0.7, 0.5} and len(records) >= 2
    stored = profile.plans["calibrated-cache"]
    for plan in stored:
        target = plan["target"]["flops_ratio"]
        mine = [r for r in records if r["target"] == target and r["flops_ratio"] <= target + 0.03]
        assert plan["measured"]["psnr_db"] in [r["psnr_db"] for r in mine]
        if target == 0.7:  # the first target keeps its best measured plan
            assert plan["measured"]["psnr_db"] == max(r["psnr_db"] for r in mine)
        assert plan["generator"]["scope"] in ("block", "step") and plan["predicted_error"] is not None
        per_call = plan["measured"]["psnr_db_per_call"]
        assert len(per_call) == 2 and min(per_call) <= plan["measured"]["psnr_db"] <= max(per_call)
    assert isinstance(profile.plans["calibrated-cache-verification"]["monotone"], bool)
    path = profile.save(tmp_path / "p.json")
    # the verified plan is what runs: the served (block, step) pairs are exactly the stored ones
    acc = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.5")
    run(acc, name, steps=steps)
    plan = next(p for p in stored if p["target"]["flops_ratio"] == 0.5)
    expected = {(t, profile.blocks[b]) for t, step in enumerate(plan["reuse"]) for b in step}
    assert {(r.step, n) for r in acc.stats.records for n in r.reused} == expected
    acc.remove()
    # a measured PSNR is that of the plan's images against the plain ones on the same calls
    acc = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.5")
    calls2 = [example_call(name, seed=s, steps=steps) for s in (0, 1)]
    served = np.concatenate([acc(**{**c, "output_type": "np"}).images for c in calls2])
    acc.remove()
    plain = np.concatenate([pipe(**{**c, "output_type": "np"}).images for c in
                            [example_call(name, seed=s, steps=steps) for s in (0, 1)]])  # fmt: skip
    mse = float(np.mean((served.astype(np.float32) - plain.astype(np.float32)) ** 2))
    assert plan["measured"]["psnr_db"] == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-3)


def test_step_sensitivity_is_measured_on_the_calls_given_for_it(make_pipe, tmp_path):
    """calibrate measures the step sensitivity on profiled calls and judges plans on others."""
    import dataclasses

    from ditaccel.calibration.plan_runner import PlanRunner
    from ditaccel.calibration.sensitivity import step_sensitivity

    name, steps = "tiny-random-flux", 6
    pipe = make_pipe(name)
    profile, _ = _tiny_profile(pipe, name, steps)
    fresh = dataclasses.replace(profile, plans={})
    judged = [example_call(name, seed=s, steps=steps) for s in (0, 1)]
    weighed = [example_call(name, seed=s, steps=steps) for s in (5, 6)]
    verify_plans(pipe, judged, profile, targets=(0.6,), prompts=2, sensitivity_calls=weighed)
    expected = step_sensitivity(PlanRunner(pipe, weighed, steps, tmp_path), fresh)
    other = step_sensitivity(PlanRunner(pipe, judged, steps, tmp_path), fresh)
    assert profile.step_sensitivity == expected and expected != other


def test_calibrated_cache_at_another_step_count_plans_on_that_grid(make_pipe, tmp_path):
    name, steps = "tiny-random-flux", 8
    pipe = make_pipe(name)
    profile, _ = _tiny_profile(pipe, name, steps)
    path = profile.save(tmp_path / "p.json")
    plain = run(pipe, name, steps=12)
    acc = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.7")
    out = run(acc, name, steps=12)
    method = acc.method("calibrated-cache")
    (plan,) = [p for key, p in method._plans.items() if key[0] == 12]
    assert abs(plan.flops_ratio - 0.7) <= 0.03 and plan.predicted_error is not None
    reused = {(r.step, n) for r in acc.stats.records for n in r.reused}
    assert reused == {(t, profile.blocks[b]) for t, step in enumerate(plan.reuse) for b in step}
    assert not np.array_equal(out, plain)
    acc.remove()
    # a target the profile's measured gaps cannot reach at this step count is refused, not guessed
    acc = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.1")
    with pytest.raises(ValueError, match="cannot be planned down"):
        run(acc, name, steps=3)
    acc.remove()


def test_verification_at_another_step_count_stores_plans_there_and_they_run(make_pipe, tmp_path):
    """Plans verified at another step count (from the same profile) are stored with it, each with
    the forecast order that measured best there; a call at that count serves exactly the stored
    plan in its order, and a call at a count near it takes that grid's settings and order."""
    name, steps = "tiny-random-flux", 8
    pipe = make_pipe(name)
    profile, _ = _tiny_profile(pipe, name, steps)
    profile.step_sensitivity = [1.0] * steps  # measured weighting on both grids, as calibrate runs
    calls = [example_call(name, seed=s, steps=steps) for s in (0, 1)]
    records = verify_plans(pipe, calls, profile, targets=(0.7,), prompts=2, other_steps=(6,))
    assert {r["steps"] for r in records} == {8, 6}
    assert {r["order"] for r in records if r["steps"] == 6} == set(OTHER_GRID_ORDERS)
    stored = {p["steps"]: p for p in profile.plans["calibrated-cache"]}
    assert set(stored) == {8, 6} and profile.plans["calibrated-cache-verification"]["steps"] == [8, 6]
    best = max(
        (r for r in records if r["steps"] == 6 and r["flops_ratio"] <= 0.73), key=lambda r: r["psnr_db"]
    )
    assert stored[6]["measured"]["psnr_db"] == best["psnr_db"] and stored[6]["order"] == best["order"]
    path = profile.save(tmp_path / "p.json")
    acc = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.7")
    run(acc, name, steps=6)
    expected = {(t, profile.blocks[b]) for t, step in enumerate(stored[6]["reuse"]) for b in step}
    assert {(r.step, n) for r in acc.stats.records for n in r.reused} == expected
    method = acc.method("calibrated-cache")
    assert method.plan(6, None).order == stored[6]["order"]
    # 7 steps are nearer 6 than 8 (by ratio): planned on the 7-step grid in the 6-step plan's order
    assert method.plan(7, None).order == stored[6]["order"]
    acc.remove()


def test_monotone_repair_works_on_another_grid():
    """recompute_to on a plan made for another step count keeps that grid: it computes served pairs
    again (a subset of the plan's stays served) until the dearer target is reached."""
    profile = _profile()
    steps = 8
    sigmas = list(np.linspace(1.0, 0.0, steps + 1))
    cheap = plan_cache(profile, PlannerConfig(flops_ratio=0.5), steps, sigmas)
    dear = recompute_to(profile, cheap, 0.7, sigmas)
    assert dear.steps == steps and dear.target == {"flops_ratio": 0.7}
    assert 0.7 - 1e-6 <= dear.flops_ratio <= 0.7 + 1.0 / steps
    served = {(t, b) for t, step in enumerate(dear.reuse) for b in step}
    assert served < {(t, b) for t, step in enumerate(cheap.reuse) for b in step}


def test_monotone_repair_of_a_whole_step_plan_computes_whole_steps_again():
    """A whole-step plan is repaired by whole steps: every step stays all served or all computed,
    the computed ones are a superset of the cheap plan's, the first restored is the served step
    the profile predicts worst, and the ratio stops within the tolerance of the target (a whole
    step of 12 is 0.083, more than the tolerance)."""
    from ditaccel.calibration.planner import predicted_error

    profile = _profile()
    steps, blocks = profile.steps, len(profile.blocks)
    cheap = plan_cache(profile, PlannerConfig(flops_ratio=0.4, scope="step", front=0))
    assert all(len(step) in (0, blocks) for step in cheap.reuse)
    dear = recompute_to(profile, cheap, 0.6)
    assert all(len(step) in (0, blocks) for step in dear.reuse)
    skipped = {t for t, step in enumerate(cheap.reuse) if step}
    assert {t for t, step in enumerate(dear.reuse) if step} < skipped
    assert cheap.flops_ratio < dear.flops_ratio <= 0.6 + RATIO_TOLERANCE
    assert dear.generator["recomputed_from"] == 0.4

    def without(t):
        reuse = [[] if u == t else list(step) for u, step in enumerate(cheap.reuse)]
        return CachePlan(steps, cheap.order, reuse, 0.0, None)

    one = recompute_to(profile, cheap, cheap.flops_ratio + 1.0 / steps)
    restored = [t for t in skipped if not one.reuse[t]]
    errors = {t: predicted_error(profile, without(t)) for t in skipped}
    assert restored == [min(errors, key=errors.get)]


def test_a_target_keeps_the_dearer_targets_kind_unless_another_is_clearly_better():
    from ditaccel.calibration.verify import _choose

    def plan(generator, per_call):
        mse = np.mean([10 ** (-p / 10) for p in per_call])
        measured = {"psnr_db": float(-10 * np.log10(mse)), "psnr_db_per_call": per_call}
        return CachePlan(
            4, 1, [[]] * 4, 0.5, 0.0, {"flops_ratio": 0.5}, generator=generator, measured=measured
        )

    block, whole = {"scope": "block"}, {"scope": "step"}
    dearer = plan(whole, [40.0, 40.0, 40.0, 40.0])
    # the other kind is 0.5 dB better on average but the prompts disagree: the dearer kind stays
    same, edge = plan(whole, [35.0, 35.0, 35.0, 35.0]), plan(block, [37.0, 33.0, 37.5, 34.5])
    assert _choose([edge, same], 0.5, dearer) is same
    # better on every prompt: it takes over
    clear = plan(block, [36.0, 35.5, 36.2, 35.4])
    assert _choose([clear, same], 0.5, dearer) is clear
    # the first target (no dearer plan) keeps the best measured; a plan missing the target loses
    assert _choose([same, edge], 0.5, None) is edge
    over = plan(block, [60.0] * 4)
    over.flops_ratio = 0.6
    assert _choose([over, same], 0.5, dearer) is same


def test_nearest_plan_takes_the_nearest_step_count_then_the_nearest_ratio():
    def plan(steps, ratio):
        return CachePlan(steps, 1, [[] for _ in range(steps)], ratio, 0.0, {"flops_ratio": ratio})

    plans = [plan(28, 0.5), plan(28, 0.4), plan(14, 0.5), plan(14, 0.3)]
    assert nearest_plan(plans, 50, 0.42) is plans[1]
    assert nearest_plan(plans, 12, 0.38) is plans[3]
    assert nearest_plan(plans, 19, 0.5) is plans[2]  # 19/14 < 28/19
    assert nearest_plan(plans, 21, 0.5) is plans[0]  # 28/21 < 21/14
    assert nearest_plan([], 20, 0.5) is None


def test_generators_are_valid_planner_settings():
    for generator in GENERATORS + OTHER_GRID_GENERATORS:
        PlannerConfig(flops_ratio=0.5, **generator)


def test_step_sensitivity_is_the_image_error_of_serving_one_step(make_pipe, tmp_path):
    """Each step's sensitivity is sqrt(image MSE) over the predicted error of serving every block
    at that step alone: recomputed here by hand for one step."""
    from ditaccel.calibration.plan_runner import PlanRunner
    from ditaccel.calibration.planner import CachePlan
    from ditaccel.calibration.sensitivity import step_sensitivity

    name, steps = "tiny-random-flux", 6
    pipe = make_pipe(name)
    profile, _ = _tiny_profile(pipe, name, steps)
    calls = [example_call(name, seed=s, steps=steps) for s in (0, 1)]
    runner = PlanRunner(pipe, calls, steps, tmp_path)
    gains = step_sensitivity(runner, profile, prompts=2)
    assert len(gains) == steps and all(g > 0 for g in gains) and gains[0] == gains[1]
    t = 3
    reuse = [[] for _ in range(steps)]
    reuse[t] = list(range(len(profile.blocks)))
    blocks = AcceleratedPipeline.from_pipe(pipe, methods=[])
    plain = [
        blocks(**{**example_call(name, seed=s, steps=steps), "output_type": "np"}).images for s in (0, 1)
    ]
    blocks.remove()
    served_plan = CachePlan(steps, 1, reuse, 0.9, None, {"flops_ratio": 0.999})
    single = profile.__class__(**{**profile.__dict__, "plans": {"calibrated-cache": [served_plan.to_dict()]},
                                  "tensors": {}})  # fmt: skip
    path = single.save(tmp_path / "one.json")
    acc = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.999")
    served = [acc(**{**example_call(name, seed=s, steps=steps), "output_type": "np"}).images for s in (0, 1)]
    assert {r.step for r in acc.stats.records if r.reused} == {t}
    acc.remove()
    mse = np.mean((np.concatenate(served).astype(np.float64) - np.concatenate(plain)) ** 2)
    predicted = profile.tensors["reuse_error_order1"][:, t, 0, 0].double().sum().item()
    assert gains[t] == pytest.approx(np.sqrt(mse) / predicted, rel=1e-3)


def test_drift_rule_serves_while_the_forecast_drift_stays_under_the_threshold():
    from ditaccel.calibration.drift_schedule import drift_pattern

    steady = np.full(12, 0.1)  # 0.1 per step: a gap of k steps drifts 0.1k
    # two computes to measure a rate, then serve while 0.1 * (steps since) < 0.25: runs of 2
    assert (
        "".join("C" if c else "." for c in drift_pattern(steady, 0.25, ramp=0.0, max_gap=3)) == "CC..C..C..C."
    )
    # no drift at all: served up to max_gap in a row, and the first steps kept as asked
    flat = drift_pattern(np.zeros(12), 1.0, ramp=0.0, max_gap=3, first=3)
    assert "".join("C" if c else "." for c in flat) == "CCC...C...C."
    # the threshold ramps: late steps are served longer at the same drift
    ramped = drift_pattern(steady, 0.15, ramp=2.0, max_gap=3)
    gaps = np.diff(np.nonzero(ramped)[0])
    assert gaps[0] == 1 and gaps[-1] > gaps[1]


def test_drift_plans_are_whole_steps_of_the_rule_and_land_on_their_target():
    from ditaccel.calibration.drift_schedule import call_drift, drift_pattern

    profile = _profile(steps=20, blocks=4, gap=8)
    rng = np.random.default_rng(0)
    change = 0.05 + 0.2 * np.exp(-np.arange(20) / 4.0)  # fast early, slow late, as measured ones
    change[0] = 0.0  # as profiled: step 0 has no previous step
    profile.block_change = [[float(c * (1 + 0.1 * rng.random())) for _ in range(4)] for c in change]
    for target in (0.7, 0.5, 0.4):
        plan = plan_cache(profile, PlannerConfig(flops_ratio=target, scope="drift", max_gap=3))
        assert abs(plan.flops_ratio - target) <= RATIO_TOLERANCE, (target, plan.flops_ratio)
        served = np.array([len(r) for r in plan.reuse])
        assert set(served) <= {0, 4}  # whole steps on the profile's own grid (20 steps land)
        computed = served == 0
        drift = call_drift(profile, 20)
        assert any(  # the pattern is one the rule gives at some threshold
            np.array_equal(computed, drift_pattern(drift, t, 3.0, 3)) for t in np.geomspace(1e-4, 1e2, 600)
        )
        assert plan.generator["scope"] == "drift" and plan.predicted_error is not None
    # a coarse grid where no step pattern lands: finished in (block, step) pairs, on target
    coarse = list(np.linspace(1.0, 0.0, 11))
    for target in (0.65, 0.45):
        plan = plan_cache(profile, PlannerConfig(flops_ratio=target, scope="drift"), 10, coarse)
        assert abs(plan.flops_ratio - target) <= RATIO_TOLERANCE, (target, plan.flops_ratio)
        assert any(0 < len(r) < 4 for r in plan.reuse)  # some step only partly served
    # on a grid twice as fine, each step drifts half a profiled step's change; the profile's step 0
    # has no change (no previous step), which must not be read as a slow start
    fine = list(np.linspace(1.0, 0.0, 41))
    mean = np.asarray(profile.block_change).mean(axis=1)
    drift = call_drift(profile, 40, fine)
    assert drift[1] == pytest.approx(mean[1] / 2) and drift[4] == pytest.approx(mean[2] / 2)
    # a drift plan is repaired by whole steps, as a whole-step plan is
    cheap = plan_cache(profile, PlannerConfig(flops_ratio=0.4, scope="drift", max_gap=3))
    dear = recompute_to(profile, cheap, 0.6)
    assert all(len(step) in (0, 4) for step in dear.reuse) and cheap.flops_ratio < dear.flops_ratio
    # an error budget alone: the pattern, then pairs, up to the budget and never past it
    for budget in (0.0, 2.0, 10.0):
        plan = plan_cache(profile, PlannerConfig(flops_ratio=None, budget=budget, scope="drift"))
        assert plan.predicted_error <= budget + 1e-9
    assert plan.flops_ratio < 1.0
    # no drift at all: the rule's one pattern serves every step it may, past a small budget; the
    # plan starts from computing everything instead and pairs spend the budget
    still = _profile(steps=20, blocks=4, gap=8)
    plan = plan_cache(still, PlannerConfig(flops_ratio=None, budget=0.5, scope="drift"))
    assert 0 < plan.predicted_error <= 0.5 and any(0 < len(step) < 4 for step in plan.reuse)
    with pytest.raises(ValueError, match="ramp"):
        PlannerConfig(scope="drift", ramp=-1.0)


def test_calibrated_cache_makes_the_stored_drift_kind_on_another_grid(make_pipe, tmp_path):
    """A verified drift plan's settings (its ramp too) make the plan of a call at another step
    count, and the steps the call serves are that plan's."""
    name, steps = "tiny-random-flux", 8
    pipe = make_pipe(name)
    profile, _ = _tiny_profile(pipe, name, steps)
    stored = plan_cache(profile, PlannerConfig(flops_ratio=0.6, scope="drift", ramp=1.5))
    profile.plans["calibrated-cache"] = [stored.to_dict()]
    path = profile.save(tmp_path / "p.json")
    acc = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.6")
    run(acc, name, steps=12)
    (plan,) = [p for key, p in acc.method("calibrated-cache")._plans.items() if key[0] == 12]
    assert plan.generator["scope"] == "drift" and plan.generator["ramp"] == 1.5
    assert abs(plan.flops_ratio - 0.6) <= RATIO_TOLERANCE
    reused = {(r.step, n) for r in acc.stats.records for n in r.reused}
    assert reused == {(t, profile.blocks[b]) for t, step in enumerate(plan.reuse) for b in step}
    acc.remove()


def test_drift_rule_decides_as_adaptive_cache_does_on_the_same_drift():
    """adaptive-cache's own policy (rate mode), fed residuals whose relative L1 change over any gap
    is the sum of the per-step drifts, computes exactly the steps drift_pattern says."""
    from types import SimpleNamespace

    from ditaccel.calibration.drift_schedule import drift_pattern
    from ditaccel.methods.adaptive_cache import AdaptiveCacheConfig, _AdaptivePolicy

    class Context:  # the parts of DenoiseContext the policy reads
        def __init__(self) -> None:
            self.states, self.current = {}, None
            self.cfg = SimpleNamespace(batched=[])
            self.adapter = SimpleNamespace(denoisers=lambda: [torch.nn.Linear(1, 1)])

        def state(self, owner, factory, shared=False, by_rows=False):
            return self.states.setdefault(owner, factory())

    steps = 24
    drift = np.array([0.0] + [1 / 8] * 5 + [1 / 32] * 12 + [1 / 16] * 6)  # dyadic: exact in float32
    totals = np.cumsum(drift)
    for threshold, ramp, max_reuse, warmup in [(0.2, 0.0, 3, 1), (0.1, 3.0, 3, 1), (0.07, 1.0, 5, 3)]:
        config = AdaptiveCacheConfig(
            threshold=threshold, ramp=ramp, max_reuse=max_reuse, warmup=warmup, order=0
        )
        context = Context()
        policy = _AdaptivePolicy(context, config, "adaptive-cache")
        computed = []
        for t in range(steps):
            # mean |r| stays 1 and mean |r_b - r_a| is the drift between them
            residual = torch.tensor([[1.0 + totals[t], 1.0 - totals[t]]])
            info = SimpleNamespace(step=t, total=steps, denoiser=0)
            context.current = info
            served = policy.enter(info, torch.zeros(1, 2), None) is not None
            if not served:
                policy.computed(info, residual, None)
            computed.append(not served)
        expected = drift_pattern(drift, threshold, ramp, max_reuse, first=warmup)
        assert computed == expected.tolist(), (threshold, ramp, max_reuse, warmup)
        assert 0 < sum(computed) < steps  # the case serves and computes
