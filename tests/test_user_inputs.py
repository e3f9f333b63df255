"""A user's own inputs (ditaccel.inputs): edit cases as JSONL or a folder, clear errors for malformed
ones, and on a tiny FLUX.1 Kontext pipeline saved to disk (not an embedded model): calibrate --task
edit with the cases writes a profile that context-prune then runs with; bench and tune take them."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from ditaccel.cli import app
from ditaccel.inputs import CaseError, load_cases, load_edit_cases, load_prompts
from ditaccel.models import _centre_mask, _synthetic_source

runner = CliRunner(env={"COLUMNS": "300"})  # rich wraps long lines (paths, specs) at the terminal width
SIZE = 32


def _write_cases(folder, count=2, **overrides):
    lines = []
    for i in range(count):
        _synthetic_source(SIZE, i).save(folder / f"src{i}.png")
        _centre_mask(SIZE).save(folder / f"mask{i}.png")
        record = {"image": f"src{i}.png", "instruction": "make the square green", "mask": f"mask{i}.png"}
        lines.append(json.dumps({**record, **overrides}))
    path = folder / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_and_folder_cases(tmp_path):
    path = _write_cases(tmp_path)
    cases = load_edit_cases(path)
    assert [c.seed for c in cases] == [0, 1] and cases[0].prompt == "make the square green"
    assert cases[0].image.size == (SIZE, SIZE) and cases[0].mask.mode == "L"
    assert [c.prompt for c in load_edit_cases(tmp_path)] == [
        c.prompt for c in cases
    ]  # folder with cases.jsonl

    folder = tmp_path / "plain"
    folder.mkdir()
    _synthetic_source(SIZE, 3).save(folder / "a.png")
    (folder / "a.txt").write_text("remove the square\n")
    _synthetic_source(SIZE, 4).save(folder / "b.png")
    (folder / "b.txt").write_text("add a circle")
    _centre_mask(SIZE).save(folder / "b.mask.png")
    found = load_edit_cases(folder)
    assert [(c.prompt, c.mask is not None) for c in found] == [
        ("remove the square", False),
        ("add a circle", True),
    ]

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\na blue square\n")
    assert [(c.prompt, c.seed) for c in load_prompts(prompts)] == [("a red circle", 0), ("a blue square", 1)]
    assert load_cases(prompts, "t2i")[1].prompt == "a blue square"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "cases.jsonl:1: not valid JSON"),
        ('["a list"]', "must be a JSON object"),
        ('{"image": "src0.png"}', "no 'instruction'"),
        ('{"instruction": "x"}', "no 'image'"),
        ('{"image": "gone.png", "instruction": "x"}', "gone.png does not exist"),
        ('{"image": "src0.png", "instruction": "x", "colour": 1}', "unknown key(s) ['colour']"),
        ('{"image": "src0.png", "instruction": "x", "seed": -1}', "seed must be a non-negative integer"),
        ('{"image": "src0.png", "instruction": "  "}', "instruction must be a non-empty string"),
        ('{"image": "note.txt", "instruction": "x"}', "is not a readable image"),
        (
            '{"image": "src0.png", "instruction": "x", "mask": "small.png"}',
            "mask small.png is 8x8, the image 32x32",
        ),
        ('{"image": "src0.png", "instruction": "x", "mask": "empty.png"}', "mask empty.png is empty"),
    ],
)
def test_a_malformed_case_fails_clearly(tmp_path, line, message):
    _write_cases(tmp_path, count=1)
    Image.new("L", (8, 8), 255).save(tmp_path / "small.png")
    Image.new("L", (SIZE, SIZE), 0).save(tmp_path / "empty.png")
    (tmp_path / "note.txt").write_text("not an image")
    path = tmp_path / "cases.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(CaseError, match=None) as info:
        load_edit_cases(path)
    assert message in str(info.value)


def test_a_folder_image_without_its_instruction_fails(tmp_path):
    _synthetic_source(SIZE, 0).save(tmp_path / "a.png")
    with pytest.raises(CaseError, match=r"no instruction beside it \(a.txt"):
        load_edit_cases(tmp_path)


@pytest.fixture(scope="module")
def kontext_folder(tmp_path_factory):
    """A tiny FLUX.1 Kontext pipeline saved to disk: a model ditaccel does not embed."""
    from ditaccel.testing import tiny_pipeline

    root = tmp_path_factory.mktemp("user")
    tiny_pipeline("tiny-random-flux-kontext").save_pretrained(root / "kontext")
    return root / "kontext", _write_cases(root)


def test_context_prune_is_refused_without_a_profile_and_runs_after_calibrate(kontext_folder, tmp_path):
    model, cases = kontext_folder
    bench = [
        "bench",
        "--model",
        str(model),
        "--task",
        "edit",
        "--cases",
        str(cases),
        "--steps",
        "2",
        "--runs",
        "1",
    ]
    refused = runner.invoke(app, [*bench, "--methods", "context-prune:keep=0.5"], terminal_width=300)
    assert refused.exit_code == 2 and "needs a calibration profile of the editing pipeline" in " ".join(
        refused.output.split()
    )
    # before: calibrating an edit on a model that is not embedded had no inputs to use
    no_cases = runner.invoke(
        app,
        ["calibrate", "--model", str(model), "--task", "edit", "--out", str(tmp_path / "x.json")],
        terminal_width=300,
    )
    assert no_cases.exit_code == 2 and "--cases" in " ".join(no_cases.output.split())

    profile = tmp_path / "profile.json"
    calibrated = runner.invoke(
        app,
        ["calibrate", "--model", str(model), "--task", "edit", "--cases", str(cases), "--steps", "2",
         "--verify", "0", "--out", str(profile)],
    )  # fmt: skip
    assert calibrated.exit_code == 0, calibrated.output
    stored = json.loads(profile.read_text())
    assert stored["pipeline"] == "FluxKontextPipeline" and stored["prompts"] == 2
    assert stored["context_layers"]  # the reference-token sensitivity context-prune needs

    report = tmp_path / "bench.json"
    ran = runner.invoke(
        app,
        [*bench, "--methods", f"context-prune:keep=0.5,profile={profile}", "--json", str(report)],
        terminal_width=300,
    )
    assert ran.exit_code == 0, ran.output
    rows = json.loads(report.read_text())
    assert rows["prompts"] == 2 and (rows["height"], rows["width"]) == (SIZE, SIZE)  # the cases' size
    pruned = rows["results"][1]
    assert pruned["method"].startswith("context-prune") and pruned["flops_ratio"] < 1.0
    assert pruned["region_psnr_db"] is not None  # the cases' masks drive the edit-region metric


def test_bench_refuses_a_malformed_cases_file_before_loading(kontext_folder, tmp_path):
    model, _ = kontext_folder
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "x.png"}\n')
    result = runner.invoke(
        app,
        ["bench", "--model", str(model), "--task", "edit", "--cases", str(bad), "--methods", "none"],
        terminal_width=300,
    )
    assert result.exit_code == 2 and "bad.jsonl:1: no 'instruction'" in " ".join(result.output.split())


def test_tune_takes_edit_cases(kontext_folder, tmp_path):
    model, cases = kontext_folder
    result = runner.invoke(
        app,
        ["tune", "--model", str(model), "--task", "edit", "--cases", str(cases), "--steps", "2", "--runs", "1",
         "--candidate", "region-edit:source=mask", "--candidate", "deepcache:interval=2",
         "--min-psnr", "0", "--out", str(tmp_path / "tune")],
        terminal_width=200,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "tune" / "front.json").read_text())
    assert report["task"] == "edit" and report["inputs"] == 2 and report["recommended"]["reached"]
    assert all("region_psnr_db" in row for row in report["results"])
