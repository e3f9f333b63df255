"""``ditaccel tune`` end to end on a tiny model (CPU): the front, the outputs, a refusal, the resume,
and the bench's measuring code behind it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ditaccel.cli import app
from ditaccel.tuning.search import Point, dominates

runner = CliRunner(env={"COLUMNS": "300"})  # rich wraps long lines (paths, specs) at the terminal width
CANDIDATES = ("deepcache:interval=2", "deepcache:interval=3", "adaptive-cache:threshold=0.3")
# 3 inputs, eta 2: a rung of 2 inputs (one timed run), then all 3 (--runs); 2 steps keep it quick
ARGS = ["--model", "tiny-random-flux", "--prompts", "3", "--steps", "2", "--eta", "2", "--runs", "1"]


def _tune(out, *extra):
    args = ["tune", *ARGS, "--out", str(out), *extra]
    for spec in CANDIDATES:
        args += ["--candidate", spec]
    return runner.invoke(app, args, terminal_width=200)


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    result = _tune(out, "--target-speedup", "1000")
    assert result.exit_code == 0, result.output
    return out, result.output


def test_front_and_outputs(tuned):
    out, output = tuned
    report = json.loads((out / "front.json").read_text())
    rows = report["results"]
    assert [r["inputs"] for r in report["rungs"]] == [2, 3]
    assert len(report["rungs"][0]["measured"]) == 3 and len(report["rungs"][1]["measured"]) == 2
    assert {r["method"] for r in rows} == {m["method"] for m in report["rungs"][1]["measured"]}
    points = [Point(r["method"], r["speedup"], r["psnr_db"]) for r in rows]
    front = {r["method"] for r in report["front"]}
    for p in points:  # the front is exactly the points no other point dominates
        assert (p.spec in front) == (not any(dominates(q, p) for q in points)), p
    for row in rows:  # bench keys, measured against the plain pipeline
        assert {"wall_s", "speedup", "transformer_gflops", "flops_ratio", "psnr_db", "ssim"} <= set(row)
        assert 0 < row["flops_ratio"] <= 1.0 + 1e-9
    for name in ("front.json", "front.png", "grid.png"):
        assert (out / name).stat().st_size > 0


def test_an_unreachable_goal_gets_the_closest_setting_and_says_so(tuned):
    out, output = tuned
    report = json.loads((out / "front.json").read_text())
    best = report["recommended"]
    assert not best["reached"]
    assert best["speedup"] == max(r["speedup"] for r in report["results"])
    assert "no candidate reached 1000x" in output and "closest measured" in output
    assert f'--methods "{best["method"]}"' in output and "FLOPs ratio" in output
    # 3 inputs are too few for a 90% bootstrap interval: said, and no interval made up
    assert "too few for a 90% interval" in output
    assert best["psnr_interval"] is None and best["speedup_interval"] is None


def test_a_rerun_resumes_and_a_changed_setting_is_refused(tuned):
    out, _ = tuned
    records = sorted((out / "measurements").rglob("*.json"))
    assert len(records) == 5  # 3 candidates on 2 inputs, 2 on 3
    lost, kept = records[0], records[1:]
    stamps = {p: p.stat().st_mtime_ns for p in kept}
    lost.unlink()
    result = _tune(out, "--target-speedup", "1000")
    assert result.exit_code == 0, result.output
    assert lost.is_file()  # measured again
    assert {p: p.stat().st_mtime_ns for p in kept} == stamps  # the others were skipped
    assert json.loads((out / "tune.json").read_text())["elapsed_s"] > 0

    other = runner.invoke(app, ["tune", *ARGS[:-4], "--steps", "3", "--out", str(out)], terminal_width=300)
    assert (
        other.exit_code == 2 and "holds a tune of other settings" in other.output and "steps" in other.output
    )


def test_bad_goals_fail_before_loading(tmp_path):
    both = runner.invoke(
        app,
        ["tune", *ARGS, "--out", str(tmp_path), "--target-speedup", "2", "--min-psnr", "30"],
        terminal_width=300,
    )
    assert both.exit_code == 2 and "not both" in both.output
    bad = runner.invoke(
        app, ["tune", *ARGS, "--out", str(tmp_path), "--candidate", "nope"], terminal_width=300
    )
    assert bad.exit_code == 2 and "unknown method 'nope'" in bad.output
