"""``ditaccel tune``'s options beyond the plain search, on tiny models (CPU): the Python entry point,
the time budget and its resume, ``--calibrate`` (the profile made first and used by the
candidates), and ``--task video``."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import ditaccel
from ditaccel.cli import app
from ditaccel.testing import tiny_pipeline
from ditaccel.tuning import run as tune_run
from ditaccel.tuning.candidates import with_profiles

runner = CliRunner(env={"COLUMNS": "300"})
QUICK = ["--steps", "2", "--runs", "1", "--eta", "2"]


def test_with_profiles_fills_only_the_parts_that_name_none(tmp_path):
    p, e = tmp_path / "p.json", tmp_path / "e.json"
    assert (
        with_profiles("calibrated-cache:flops_ratio=0.5", p, e)
        == f"calibrated-cache:flops_ratio=0.5,profile={p}"
    )
    assert with_profiles("context-prune", p, e) == f"context-prune:profile={e}"
    assert (
        with_profiles("deepcache:interval=2+context-prune:keep=0.5", p, e)
        == f"deepcache:interval=2+context-prune:keep=0.5,profile={e}"
    )
    own = "calibrated-cache:flops_ratio=0.5,profile=mine.json"
    assert with_profiles(own, p, e) == own  # the user's own profile stays
    assert with_profiles("calibrated-cache:flops_ratio=0.5", None, None) == "calibrated-cache:flops_ratio=0.5"


class _Clock:
    """A monotonic clock that moves one minute per image pass the tune reports."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def tick(self, _description: str) -> None:
        self.now += 60.0


def test_python_tune_stops_at_its_budget_and_a_rerun_goes_on(tmp_path, monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(tune_run.time, "monotonic", clock)
    pipe = tiny_pipeline("tiny-random-flux")
    prompts = ["a red circle", "a blue square", "a green triangle"]
    specs = ("deepcache:interval=2", "deepcache:interval=3", "adaptive-cache:threshold=0.3")
    options = dict(steps=2, runs=1, eta=2, group=1, candidates=specs, out=tmp_path)
    # rung 1 (2 inputs) screens: the plain images (2 passes), then per candidate a timed plain and
    # a timed candidate pass (4): 2 + 3 * 4 = 14 passes, 14 minutes. The deadline is checked before
    # each candidate, so 13 minutes let rung 1 finish and stop rung 2.
    cut = ditaccel.tune(pipe, prompts, budget_minutes=13, progress=clock.tick, **options)
    assert [r["inputs"] for r in cut.report["rungs"]] == [2, 3]
    assert len(cut.report["rungs"][0]["measured"]) == 3 and len(cut.report["rungs"][1]["measured"]) < 2
    assert any("time budget ran out on rung 2" in n for n in cut.notes)
    assert any("recommended from rung 1" in n for n in cut.notes)
    assert cut.recommended["inputs"] == 2 and cut.spec in specs

    done = ditaccel.tune(pipe, prompts, progress=clock.tick, **options)  # no budget: rung 2 in full
    assert done.recommended["inputs"] == 3 and not any("budget" in n for n in done.notes)
    assert {r["method"] for r in done.results} <= set(specs) and len(done.results) == 2
    assert done.paths["front.json"].is_file() and done.spec == done.recommended["method"]


def test_python_tune_without_out_and_its_argument_errors():
    pipe = tiny_pipeline("tiny-random-flux")
    result = ditaccel.tune(
        pipe,
        ["a red circle", "a blue square"],
        steps=2,
        runs=1,
        candidates=("deepcache:interval=2",),
        min_psnr=0,
    )
    assert result.spec == "deepcache:interval=2" and result.reached
    assert not result.paths["front.json"].exists()  # a temporary folder, removed afterwards
    with pytest.raises(TypeError, match="not both"):
        ditaccel.tune(pipe, ["x"], config=tune_run.TuneConfig(), min_psnr=0)
    with pytest.raises(ValueError, match="not both"):
        ditaccel.tune(pipe, ["x"], target_speedup=2, min_psnr=30)
    with pytest.raises(ValueError, match="no inputs"):
        ditaccel.tune(pipe, [], min_psnr=0)


def test_cli_budget_that_measures_nothing_is_refused(tmp_path):
    result = runner.invoke(
        app,
        ["tune", "--model", "tiny-random-flux", "--prompts", "2", *QUICK, "--budget-minutes", "1e-9",
         "--candidate", "deepcache:interval=2", "--out", str(tmp_path)],
        terminal_width=300,
    )  # fmt: skip
    assert result.exit_code == 2 and "ran out before any candidate was measured" in result.output


def test_cli_calibrate_makes_the_profile_the_candidates_use(tmp_path):
    out = tmp_path / "tune"
    result = runner.invoke(
        app,
        ["tune", "--model", "tiny-random-flux", "--prompts", "2", *QUICK, "--calibrate", "--min-psnr", "0",
         "--candidate", "calibrated-cache:flops_ratio=0.6", "--out", str(out)],
        terminal_width=300,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    profile = out / "profile.json"
    assert json.loads(profile.read_text())["pipeline"] == "FluxPipeline"
    assert f"calibrated on 8 inputs: {profile}" in result.output  # the model's own calibration prompts
    report = json.loads((out / "front.json").read_text())
    assert report["recommended"]["method"] == f"calibrated-cache:flops_ratio=0.6,profile={profile}"
    assert report["recommended"]["flops_ratio"] < 1.0


def test_cli_tunes_a_video_pipeline(tmp_path):
    out = tmp_path / "tune"
    result = runner.invoke(
        app,
        ["tune", "--model", "tiny-random-wan", "--task", "video", "--prompts", "2", *QUICK, "--min-psnr", "0",
         "--candidate", "deepcache:interval=2", "--out", str(out)],
        terminal_width=300,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "front.json").read_text())["recommended"]["method"] == "deepcache:interval=2"
    for name in ("front.png", "grid.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize(
    ("model", "task", "message"),
    [
        ("tiny-random-flux", "video", "--task video needs a text-to-video pipeline"),
        ("tiny-random-wan", "t2i", "is a text-to-video pipeline: use --task video"),
    ],
)
def test_cli_video_task_must_match_the_pipeline(tmp_path, model, task, message):
    result = runner.invoke(
        app,
        ["tune", "--model", model, "--task", task, "--prompts", "2", *QUICK, "--out", str(tmp_path)],
        terminal_width=300,
    )
    assert result.exit_code == 2 and message in " ".join(result.output.split())
