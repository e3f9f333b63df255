"""Calibration: the profiler measures what it says, the profile file is strict, the planner spends
its FLOPs where the profile says reuse is cheap, and calibrated-cache runs exactly its plan."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import run
from typer.testing import CliRunner

from ditaccel import AcceleratedPipeline, models
from ditaccel.calibration import (
    CachePlan,
    PlannerConfig,
    Profile,
    Profiler,
    ProfilerConfig,
    key_density,
    plan_all,
    plan_cache,
    shipped_profile,
)
from ditaccel.calibration.error_model import call_sigmas
from ditaccel.calibration.planner import pivotal_layers, predicted_error
from ditaccel.calibration.plots import profile_plots
from ditaccel.calibration.profile import fingerprint, tensor_path
from ditaccel.cli import app
from ditaccel.hooks.block_range import flat_blocks
from ditaccel.methods.taylor import TaylorSeries
from ditaccel.testing import TINY_MODELS, example_call

runner = CliRunner()


# --- the profile file ---------------------------------------------------------------------------
def _profile(steps=4, blocks=("a", "b", "c"), gap=3, seed=0, **overrides) -> Profile:
    """A synthetic profile whose reuse errors are random (block ``a`` the cheapest to serve)."""
    generator = torch.Generator().manual_seed(seed)
    b, t = len(blocks), steps
    order0 = torch.rand(b, t, gap, generator=generator) + 0.1
    order1 = torch.rand(b, t, gap, gap, generator=generator) + 0.1
    order0[0] *= 0.01
    order1[0] *= 0.01
    values = dict(
        model="m", pipeline="P", steps=t, prompts=1, blocks=list(blocks),
        block_change=[[0.0] * b] + [[0.1] * b] * (t - 1), block_change_cv=[[0.0] * b] * t,
        attention_layers=["a.attn"], attention=[0.5], attention_by_head=[[0.4, 0.6]],
        block_gflops=[1.0] * b, forward_gflops=float(b) + 0.5,
        tensors={"reuse_error_order0": order0, "reuse_error_order1": order1},
    )  # fmt: skip
    return Profile(**{**values, **overrides})


def test_profile_round_trip_with_its_tensors(tmp_path):
    profile = plan_all(_profile())
    path = profile.save(tmp_path / "p.json")
    assert tensor_path(path).is_file()
    loaded = Profile.load(path)
    assert loaded == profile and loaded.has_errors
    for name, tensor in profile.tensors.items():
        assert torch.equal(loaded.tensors[name], tensor)
    assert "tensors" not in json.loads(path.read_text())  # tensors are never in the JSON


def test_profile_validation_refuses_bad_files(tmp_path):
    with pytest.raises(ValueError, match="steps x"):
        _profile(block_change=[[0.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="version"):
        _profile(version=99)
    with pytest.raises(ValueError, match="blocks x steps"):
        _profile(tensors={"reuse_error_order0": torch.zeros(2, 4, 3)})
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"model": "m"}))
    with pytest.raises(ValueError, match="missing"):
        Profile.load(path)
    data = json.loads(_profile().to_json())
    path.write_text(json.dumps({**data, "pickle": "x"}))
    with pytest.raises(ValueError, match="unknown"):
        Profile.load(path)
    path.write_text("not json")
    with pytest.raises(ValueError, match="cannot read"):
        Profile.load(path)


def test_profile_of_another_model_is_refused():
    profile = _profile(fingerprint="abc")
    with pytest.raises(ValueError, match="blocks"):
        profile.check_model(["x", "y"], "abc")
    with pytest.raises(ValueError, match="transformer"):
        profile.check_model(["a", "b", "c"], "def")
    profile.check_model(["a", "b", "c"], "abc")


# --- the planner ----------------------------------------------------------------------------------
def test_planner_serves_cheap_blocks_first_and_meets_the_target():
    profile = _profile(steps=8)
    plans = [plan_cache(profile, PlannerConfig(flops_ratio=r)) for r in (1.0, 0.8, 0.65, 0.5)]
    assert plans[0].empty and plans[0].predicted_error == 0
    share = 1.0 / (profile.steps * profile.forward_gflops)
    for target, plan in zip((0.8, 0.65, 0.5), plans[1:], strict=True):
        assert target - share < plan.flops_ratio <= target + 1e-9
        assert not plan.reuse[0]  # nothing is cached before the first step
    served = [sum(len(step) for step in p.reuse) for p in plans]
    errors = [p.predicted_error for p in plans]
    assert served == sorted(served) and errors == sorted(errors)
    # the first three choices go to block "a", whose reuse errors are 100x smaller
    first = plan_cache(profile, PlannerConfig(flops_ratio=0.9))
    assert sum(step == [0] for step in first.reuse) == 3 and sum(map(len, first.reuse)) == 3
    assert predicted_error(profile, plans[2]) == pytest.approx(plans[2].predicted_error, rel=1e-5)


def test_planner_budget_and_longest_gap():
    profile = _profile(steps=8)
    budgeted = plan_cache(profile, PlannerConfig(flops_ratio=None, budget=0.5))
    assert 0 < budgeted.predicted_error <= 0.5
    assert plan_cache(profile, PlannerConfig(flops_ratio=None, budget=0.0)).empty
    short = plan_cache(profile, PlannerConfig(flops_ratio=0.05, max_gap=1))
    assert short.flops_ratio > 0.05 and not short.empty  # as far as runs of one served step go
    for b in range(len(profile.blocks)):
        served = [b in step for step in short.reuse]
        assert not any(x and y for x, y in zip(served, served[1:], strict=False))  # no two in a row
    with pytest.raises(ValueError, match="target"):
        PlannerConfig(flops_ratio=None, budget=None)
    with pytest.raises(ValueError, match="order"):
        PlannerConfig(order=2)


def test_plan_for_another_step_count():
    plan = CachePlan(4, 1, [[], [0], [0, 1], [1]], 0.5, 1.0, max_gap=2)
    assert plan.for_steps(4) is plan
    stretched = plan.for_steps(7)
    assert stretched.steps == 7 and stretched.reuse[0] == [] and stretched.reuse[-1] == [1]
    assert stretched.predicted_error is None and stretched.target["mapped_from_steps"] == 4
    longer = plan.for_steps(40)
    for b in (0, 1):  # served runs stay within max_gap
        served = "".join("s" if b in step else "c" for step in longer.reuse)
        assert "sss" not in served and "s" in served
    served_share = longer.served / 40
    assert longer.flops_ratio == pytest.approx(1 - 0.5 * served_share / (plan.served / 4), abs=1e-6)
    with pytest.raises(ValueError, match="first step"):
        CachePlan(2, 1, [[0], []], 0.5, 1.0)


def test_pivotal_layers_hold_half_the_sensitivity():
    profile = _profile(context_layers=["l0", "l1", "l2", "l3"], context_sensitivity=[0.1, 0.6, 0.2, 0.1])
    assert pivotal_layers(profile) == ["l1"]
    assert pivotal_layers(profile, share=0.8) == ["l1", "l2"]
    assert pivotal_layers(_profile()) == []


# --- the profiler ---------------------------------------------------------------------------------
def test_key_density_of_uniform_and_peaked_attention():
    k = torch.randn(1, 1, 40, 8, generator=torch.Generator().manual_seed(0))
    uniform = key_density(torch.zeros(1, 1, 5, 8), k, torch.arange(5), None, 0.95)
    assert uniform.item() == pytest.approx(math.ceil(0.95 * 40) / 40)
    q = k[:, :, :5] * 100.0  # each query points at its own key only
    assert key_density(q, k, torch.arange(5), None, 0.95).item() == pytest.approx(1 / 40)


def _calls(name, seeds, steps):
    calls = [example_call(name, seed=s, steps=steps) for s in seeds]
    for call in calls:
        call.pop("num_inference_steps")
    return calls


def test_profiler_on_a_tiny_pipeline(make_pipe):
    name = "tiny-random-flux"
    pipe = AcceleratedPipeline.from_pipe(make_pipe(name), methods=[])
    config = ProfilerConfig(max_gap=2, attention_every=2)
    profile = Profiler(pipe, config).profile(_calls(name, (0, 1), 4), name, steps=4)
    change = np.array(profile.block_change)
    assert change.shape == (4, len(profile.blocks)) and profile.prompts == 2
    assert np.all(change[0] == 0) and np.all(change[1:] > 0)  # step 0 has no previous step
    assert profile.attention_layers and all(0 < d <= 1 for d in profile.attention)
    assert profile.fingerprint == fingerprint(pipe.transformer.config)
    order0, order1 = profile.tensors["reuse_error_order0"], profile.tensors["reuse_error_order1"]
    assert order0.shape == (len(profile.blocks), 4, 2) and order1.shape == (len(profile.blocks), 4, 2, 2)
    assert torch.isnan(order0[:, 0]).all() and (order0[:, 1, 0] > 0).all()  # step 1 vs step 0
    assert torch.isnan(order1[:, 1]).all() and (order1[:, 2, 0, 0] > 0).all()  # needs two steps back
    assert 0 < sum(profile.block_gflops) <= profile.forward_gflops
    assert len(profile.sigmas) >= 4
    # hooks are gone: the pipeline runs as before
    assert not any(
        getattr(m, "_diffusers_hook", None) and m._diffusers_hook.get_hook("ditaccel.profiler")
        for m in pipe.transformer.modules()
    )


def test_block_change_is_the_relative_l1_of_consecutive_residuals(make_pipe):
    """The profiler's number for one block equals the change computed by hand from its residuals."""
    name = "tiny-random-flux"
    plain = make_pipe(name)
    block = plain.transformer.transformer_blocks[0]
    residuals = []

    def keep(module, args, kwargs, output):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        residuals.append((output[1] - hidden).float())

    handle = block.register_forward_hook(keep, with_kwargs=True)
    pipe = AcceleratedPipeline.from_pipe(plain, methods=[])
    profile = Profiler(pipe).profile(_calls(name, (0,), 3), name, steps=3)
    handle.remove()
    expected = [
        float((b - a).abs().mean() / a.abs().mean()) for a, b in zip(residuals, residuals[1:], strict=False)
    ]
    index = profile.blocks.index("transformer_blocks.0")
    got = [row[index] for row in profile.block_change[1:]]
    assert got == pytest.approx(expected, rel=1e-4)


def test_reuse_errors_are_the_errors_of_the_forecast_the_cache_makes(make_pipe):
    """order0[b, t, g0-1]: serving step t from the residual g0 steps back; order1[b, t, g0-1, g1-1]:
    the Taylor forecast from the steps t-g0-g1 and t-g0, as calibrated-cache runs it."""
    name = "tiny-random-flux"
    plain = make_pipe(name)
    residuals, outputs = [], []

    def keep(module, args, kwargs, output):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        residuals.append((output[1] - hidden).float())
        outputs.append(output[1].float())

    handle = plain.transformer.transformer_blocks[1].register_forward_hook(keep, with_kwargs=True)
    pipe = AcceleratedPipeline.from_pipe(plain, methods=[])
    config = ProfilerConfig(max_gap=3, sketch_tokens=10_000)  # every token: no sampling
    profile = Profiler(pipe, config).profile(_calls(name, (0,), 7), name, steps=7)
    handle.remove()
    b = profile.blocks.index("transformer_blocks.1")
    order0, order1 = profile.tensors["reuse_error_order0"], profile.tensors["reuse_error_order1"]
    r = residuals
    for t, g0, g1 in [(3, 1, 2), (5, 2, 1), (6, 3, 3), (4, 1, 1)]:
        scale = outputs[t].abs().mean()
        assert order0[b, t, g0 - 1] == pytest.approx(float((r[t] - r[t - g0]).abs().mean() / scale), rel=1e-4)
        series = TaylorSeries(1)
        series.update(r[t - g0 - g1], t - g0 - g1)
        series.update(r[t - g0], t - g0)
        expected = float((r[t] - series.forecast(t)).abs().mean() / scale)
        assert order1[b, t, g0 - 1, g1 - 1] == pytest.approx(expected, rel=1e-4)
    assert not torch.allclose(order1[b, 5, 1, 0], order1[b, 5, 0, 1])  # the two gaps are not symmetric


def test_context_sensitivity_on_a_reference_pipeline(make_pipe):
    name = "tiny-random-flux-kontext"
    pipe = AcceleratedPipeline.from_pipe(make_pipe(name), methods=[])
    profile = Profiler(pipe, ProfilerConfig(context_prompts=1)).profile(_calls(name, (0,), 2), name, steps=2)
    assert profile.context_layers == profile.attention_layers
    assert all(s > 0 for s in profile.context_sensitivity)
    flux = AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), methods=[])
    t2i = Profiler(flux).profile(_calls("tiny-random-flux", (0,), 2), "tiny-random-flux", steps=2)
    assert t2i.context_layers == [] and t2i.context_sensitivity == []


# --- calibrated-cache -------------------------------------------------------------------------------
def _model_profile(pipe, steps, tmp_path, seed=0):
    """A synthetic profile of ``pipe``'s own block layout, saved; its path."""
    denoiser = pipe.adapter.denoisers()[0]
    blocks = [b.name for b in flat_blocks(pipe.adapter, denoiser)]
    profile = _profile(
        steps=steps, blocks=blocks, seed=seed, fingerprint=fingerprint(denoiser.config),
        pipeline=type(pipe.pipeline).__name__,
    )  # fmt: skip
    return plan_all(profile).save(tmp_path / "p.json")


@pytest.mark.parametrize("name", TINY_MODELS)
def test_calibrated_cache_with_no_plan_is_the_plain_pipeline(name, make_pipe, tmp_path):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=4)
    probe = AcceleratedPipeline.from_pipe(pipe, methods=[])
    path = _model_profile(probe, 4, tmp_path)
    probe.remove()
    exact = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=1")
    assert np.array_equal(run(exact, name, steps=4), plain)
    assert exact.stats.blocks_reused == 0
    exact.remove()
    served = AcceleratedPipeline.from_pipe(pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.5")
    out = run(served, name, steps=4)
    assert served.stats.blocks_reused > 0 and not np.array_equal(out, plain)


def test_calibrated_cache_serves_exactly_the_plan_in_each_cfg_branch(make_pipe, tmp_path):
    name = "tiny-random-flux"
    cfg = {"negative_prompt": "blurry", "true_cfg_scale": 3.0}
    pipe = make_pipe(name)
    probe = AcceleratedPipeline.from_pipe(pipe, methods=[])
    path = _model_profile(probe, 6, tmp_path)
    probe.remove()
    accelerated = AcceleratedPipeline.from_pipe(
        pipe, methods=f"calibrated-cache:profile={path},flops_ratio=0.6"
    )
    first = run(accelerated, name, steps=6, **cfg)
    profile = Profile.load(path)
    plan = plan_cache(profile, PlannerConfig(flops_ratio=0.6))
    blocks = profile.blocks
    expected = {
        (t, branch, blocks[b]) for t, step in enumerate(plan.reuse) for b in step for branch in (0, 1)
    }
    got = {(r.step, r.branch, n) for r in accelerated.stats.records for n in r.reused}
    assert expected and got == expected
    assert np.array_equal(run(accelerated, name, steps=6, **cfg), first)  # state reset per call


def test_calibrated_cache_refuses_another_models_profile(make_pipe, tmp_path):
    flux = AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), methods=[])
    path = _model_profile(flux, 4, tmp_path)
    with pytest.raises(ValueError, match="profile"):
        AcceleratedPipeline.from_pipe(
            make_pipe("tiny-random-sd3"), methods=f"calibrated-cache:profile={path}"
        )
    with pytest.raises(ValueError, match="needs a calibration profile"):
        AcceleratedPipeline.from_pipe(make_pipe("tiny-random-sd3"), methods="calibrated-cache")
    with pytest.raises(ValueError, match="does not exist"):
        AcceleratedPipeline.from_pipe(
            make_pipe("tiny-random-sd3"), methods="calibrated-cache:profile=nope.json"
        )


def test_a_profile_of_another_pipeline_class_warns(make_pipe, tmp_path):
    flux = AcceleratedPipeline.from_pipe(make_pipe("tiny-random-flux"), methods=[])
    path = plan_all(Profile.load(_model_profile(flux, 4, tmp_path))).save(tmp_path / "q.json")
    flux.remove()
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "pipeline": "FluxKontextPipeline"}))
    with pytest.warns(UserWarning, match="FluxKontextPipeline"):
        AcceleratedPipeline.from_pipe(
            make_pipe("tiny-random-flux"), methods=f"calibrated-cache:profile={path}"
        )


def test_stored_plans_serve_without_the_tensor_file(make_pipe, tmp_path):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    probe = AcceleratedPipeline.from_pipe(pipe, methods=[])
    path = _model_profile(probe, 4, tmp_path)
    probe.remove()
    spec = f"calibrated-cache:profile={path},flops_ratio=0.6"
    with_tensors = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    expected = run(with_tensors, name, steps=4)
    assert with_tensors.stats.blocks_reused > 0
    with_tensors.remove()
    tensor_path(path).unlink()
    stored = AcceleratedPipeline.from_pipe(pipe, methods=spec)  # the stored plan for 0.6 is the same
    assert np.array_equal(run(stored, name, steps=4), expected)


def test_shapes_flux_ships_a_profile_that_fits_it():
    pipe = AcceleratedPipeline.from_pretrained("shapes-flux", methods="calibrated-cache")
    path = shipped_profile(pipe.pipeline)
    assert path is not None and path.parent == models.get("shapes-flux").folder
    profile = Profile.load(path)
    assert profile.has_errors and profile.steps == 28 and profile.prompts >= 8
    plan = plan_cache(profile, PlannerConfig())
    assert 0.45 < plan.flops_ratio <= 0.5  # the default target
    assert profile.step_sensitivity and profile.mag_ratios
    grids = profile.plans["calibrated-cache-verification"]["steps"]
    assert grids == [28, 14]
    sigmas = {28: None}
    for steps in grids[1:]:  # the noise levels of a call at that step count
        entry = models.get("shapes-flux")
        pipe(prompt="a red circle", num_inference_steps=steps, height=entry.height, width=entry.width,
             output_type="latent")  # fmt: skip
        sigmas[steps] = call_sigmas(pipe.pipeline.scheduler)
    for stored in profile.plans["calibrated-cache"]:  # the shipped plans are this code's plans, verified
        assert stored["steps"] in grids
        if "recomputed_from" in stored["generator"]:
            continue  # made from a cheaper plan by verification, not by the planner alone
        kind = {k: v for k, v in stored["generator"].items() if k in PlannerConfig.__dataclass_fields__}
        config = PlannerConfig(**{**kind, "flops_ratio": stored["target"]["flops_ratio"]})
        again = plan_cache(profile, config, stored["steps"], sigmas[stored["steps"]])
        assert again.reuse == stored["reuse"] and stored["measured"]["psnr_db"] > 25
    assert pipe.methods[0].flops_ratio == 0.5


# --- the command -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY_MODELS)
def test_calibrate_command_on_every_tiny_architecture(name, tmp_path):
    out, plots = tmp_path / "p.json", tmp_path / "plots"
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--model",
            name,
            "--prompts",
            "2",
            "--steps",
            "3",
            "--out",
            str(out),
            "--plots",
            str(plots),
        ],
    )
    assert result.exit_code == 0, result.output
    profile = Profile.load(out)
    assert profile.prompts == 2 and profile.steps == 3 and profile.has_errors
    assert profile.plans["calibrated-cache"]
    assert {p.name for p in plots.iterdir()} >= {"change.png", "plan.png"}


def test_calibrate_command_reads_a_prompt_file_and_fails_clearly(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square\n")
    out = tmp_path / "p.json"
    args = ["calibrate", "--model", "tiny-random-flux", "--steps", "2", "--out", str(out)]
    result = runner.invoke(app, [*args, "--prompts", str(prompts)])
    assert result.exit_code == 0, result.output
    assert Profile.load(out).prompts == 2
    for bad in ("0", "missing.txt"):
        result = runner.invoke(app, [*args, "--prompts", bad])
        assert result.exit_code == 2 and "prompts" in result.output


def test_plans_are_verified_on_inputs_the_profile_did_not_see(tmp_path):
    """The verification inputs follow the profiled ones: shapes-flux's next calibration scenes; a
    short prompt file or a cycled set repeats its prompts with fresh seeds (never a profiled
    (prompt, seed) pair)."""
    import inspect

    from ditaccel.calibration.run import CalibrationSettings
    from ditaccel.calibration.verify import VERIFY_PROMPTS
    from ditaccel.cli import calibrate_command

    assert inspect.signature(calibrate_command).parameters["verify"].default == VERIFY_PROMPTS
    settings = CalibrationSettings(model="shapes-flux", prompts=8, verify=4)
    scenes = settings.entry.calibration_cases("t2i", 12)
    assert [(c.prompt, c.seed) for c in settings.verify_cases()] == [(c.prompt, c.seed) for c in scenes[8:]]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    for count in (str(prompts), 2):
        settings = CalibrationSettings(model="tiny-random-flux", prompts=count, verify=3)
        profiled = {(c.prompt, c.seed) for c in settings.cases()}
        verified = [(c.prompt, c.seed) for c in settings.verify_cases()]
        assert len(verified) == 3 and len(set(verified)) == 3 and not profiled & set(verified)
        if count == 2:  # the model's set, cycled: the three after the profiled two
            expected = [c.prompt for c in settings.entry.calibration_cases("t2i", 5)[2:]]
        else:  # the file's prompts again
            expected = ["a red circle", "a blue square", "a red circle"]
        assert [p for p, _ in verified] == expected


def test_profiler_records_how_fast_external_tokens_move(make_pipe, tmp_path):
    """For a Kontext pipeline: per kind (reference, text), steps x layers of the relative change of
    the external tokens' keys; 0 at step 0, and 0 throughout when every step sees the same inputs."""
    name = "tiny-random-flux-kontext"
    pipe = AcceleratedPipeline.from_pipe(make_pipe(name), methods=[])
    config = ProfilerConfig(max_gap=2, attention_every=2, context_prompts=0)
    profile = Profiler(pipe, config).profile(_calls(name, (0,), 4), name, steps=4)
    assert set(profile.external_drift) == {"reference", "text"}
    for matrix in profile.external_drift.values():
        values = np.array(matrix)
        assert values.shape == (4, len(profile.attention_layers))
        assert np.all(values[0] == 0) and np.all(values[1:] > 0)
    frozen = [{**call, "sigmas": [0.7] * 4} for call in _calls(name, (0,), 4)]
    still = Profiler(pipe, config).profile(frozen, name, steps=4)
    assert np.abs(np.array(still.external_drift["reference"])).max() < 1e-6
    saved = Profile.load(profile.save(tmp_path / "p.json"))
    assert saved.external_drift == profile.external_drift
    assert "external.png" in [p.name for p in profile_plots(profile, tmp_path / "plots")]
    for bad in ({"video": []}, "text", {"reference": "text"}, {"reference": [1.0]}):  # (a hand-edited file)
        with pytest.raises(ValueError, match="external_drift"):
            Profile(**{**_fields(profile), "external_drift": bad})


def _fields(profile: Profile) -> dict:
    from dataclasses import fields

    return {f.name: getattr(profile, f.name) for f in fields(profile) if f.name != "tensors"}


def test_magnitude_ratios_are_the_ones_magcache_calibration_prints(make_pipe, capsys):
    """The profile's per-step magnitude ratios equal what diffusers' MagCache calibration mode prints
    for the same call, so peer-magcache runs as calibrated as MagCache's authors intend."""
    from diffusers import MagCacheConfig

    name, steps = "tiny-random-flux", 5
    plain = make_pipe(name)
    plain.transformer.enable_cache(MagCacheConfig(calibrate=True, num_inference_steps=steps))
    capsys.readouterr()
    plain(**example_call(name, seed=0, steps=steps))
    printed = capsys.readouterr().out
    plain.transformer.disable_cache()
    expected = [float(x) for x in printed.split("[")[-1].split("]")[0].split(",")]
    pipe = AcceleratedPipeline.from_pipe(plain, methods=[])
    profile = Profiler(pipe, ProfilerConfig(max_gap=2)).profile(_calls(name, (0,), steps), name, steps=steps)
    assert len(expected) == steps and profile.mag_ratios[0] == 1.0
    np.testing.assert_allclose(profile.mag_ratios, expected, rtol=1e-4)
    assert len(set(profile.mag_ratios[1:])) > 1  # real, step-dependent values
