"""The ditaccel CLI: models, generate, bench (JSON schema of DESIGN.md), clear failures."""

import json
import shutil
import subprocess

import pytest
from PIL import Image
from typer.testing import CliRunner

from ditaccel.cli import app
from ditaccel.metrics import psnr_from_mse
from ditaccel.testing import TINY_MODELS

runner = CliRunner()

RESULT_KEYS = {
    "method", "config", "wall_s", "speedup", "transformer_gflops", "attention_gflops",
    "flops_ratio", "psnr_db", "ssim", "shapes_acc",
}  # fmt: skip


def test_console_script_is_installed():
    exe = shutil.which("ditaccel")
    assert exe is not None
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "generate" in out and "bench" in out


def test_models_lists_every_tiny_model():
    result = runner.invoke(app, ["models"], terminal_width=80)
    assert result.exit_code == 0
    for name in TINY_MODELS:
        assert name in result.output


@pytest.mark.parametrize(
    ("model", "extra"),
    [("tiny-random-flux", []), ("tiny-random-dit", []), ("tiny-random-wan", ["--steps", "2"])],
)
def test_generate_writes_an_image(tmp_path, model, extra):
    out = tmp_path / "out.png"
    prompt = "circle" if model == "tiny-random-dit" else "a red circle"
    result = runner.invoke(app, ["generate", "--model", model, "--prompt", prompt, "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size[0] >= 32
    assert "forwards" in result.output


def test_generate_edit_with_image(tmp_path):
    src, out = tmp_path / "src.png", tmp_path / "out.png"
    Image.new("RGB", (32, 32), "red").save(src)
    args = ["generate", "--model", "tiny-random-flux-kontext", "--prompt", "make it blue", "--out", str(out)]
    result = runner.invoke(app, [*args, "--image", str(src), "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (32, 32)
    missing = runner.invoke(app, args)
    assert missing.exit_code == 2 and "pass --image" in missing.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "warp"], "unknown method 'warp'"),
        (["--methods", "none:x=1"], "unknown parameter 'x'"),
        (["--model", "nobody/nothing"], "embedded models"),
    ],
)
def test_generate_fails_clearly(tmp_path, args, message):
    base = {"--model": "tiny-random-flux", "--prompt": "x", "--out": str(tmp_path / "o.png")}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    result = runner.invoke(app, ["generate", *[v for kv in base.items() for v in kv]], terminal_width=300)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "o.png").exists()


def test_bench_writes_the_design_schema(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--model", "tiny-random-flux", "--task", "t2i", "--methods", "none", "--json", str(out)]
    result = runner.invoke(app, [*args, "--prompts", "2", "--runs", "2", "--steps", "2"], terminal_width=200)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    for key in ("model", "task", "steps", "height", "width", "device", "dtype", "prompts", "offset", "runs",
                "results"):  # fmt: skip
        assert key in report
    assert (report["model"], report["task"], report["steps"], report["prompts"], report["offset"], report["runs"]) == (
        "tiny-random-flux", "t2i", 2, 2, 0, 2
    )  # fmt: skip
    (row,) = report["results"]
    assert set(row) >= RESULT_KEYS
    assert row["method"] == "none" and row["speedup"] == 1.0 and row["flops_ratio"] == 1.0
    assert row["psnr_db"] is None and row["ssim"] is None and row["mse_per_input"] is None
    assert 0 < row["attention_gflops"] < row["transformer_gflops"]
    assert row["wall_s"] > 0


def test_bench_reports_a_combination_with_each_method_config(tmp_path):
    out = tmp_path / "bench.json"
    spec = "deepcache:interval=2+sparse-attention:density=1,block=16"
    args = ["bench", "--model", "tiny-random-flux", "--methods", spec, "--json", str(out)]
    result = runner.invoke(app, [*args, "--prompts", "1", "--runs", "1", "--steps", "3"], terminal_width=200)
    assert result.exit_code == 0, result.output
    _, row = json.loads(out.read_text())["results"]
    assert row["method"] == spec
    assert row["config"]["deepcache"]["interval"] == 2 and row["config"]["sparse-attention"]["density"] == 1.0
    (mse,) = row["mse_per_input"]  # one input; the pooled PSNR is made of these
    assert row["psnr_db"] == pytest.approx(psnr_from_mse(mse))


def test_bench_edit_task_reports_region_psnr(tmp_path):
    out = tmp_path / "bench.json"
    args = [
        "bench",
        "--model",
        "tiny-random-flux-fill",
        "--task",
        "edit",
        "--methods",
        "none",
        "--json",
        str(out),
    ]
    result = runner.invoke(app, [*args, "--prompts", "1", "--runs", "1", "--steps", "2"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["results"]
    assert "region_psnr_db" in row


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "video"], "task must be one of"),
        (["--task", "edit"], "serves bench tasks ('t2i',)"),
        (["--methods", "none:bad=1"], "unknown parameter"),
        (["--runs", "0"], "runs must be >= 1"),
    ],
)
def test_bench_fails_clearly(args, message):
    base = ["bench", "--model", "tiny-random-flux", "--methods", "none"]
    result = runner.invoke(app, [*base, *args], terminal_width=300)
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())


def test_bench_sweep_with_caches_and_peers_draws_the_fronts(tmp_path):
    out, plot = tmp_path / "sweep.json", tmp_path / "front.png"
    specs = [
        "deepcache:interval=2",
        "deepcache:interval=3",
        "adaptive-cache:threshold=1",
        "peer-fbcache:threshold=1",
    ]
    args = ["bench", "--model", "tiny-random-flux", "--steps", "10", "--prompts", "1", "--runs", "1"]
    for spec in specs:
        args += ["--methods", spec]
    result = runner.invoke(app, [*args, "--json", str(out), "--plot", str(plot)], terminal_width=200)
    assert result.exit_code == 0, result.output
    rows = {row["method"]: row for row in json.loads(out.read_text())["results"]}
    assert list(rows) == ["none", *specs]
    # counted FLOPs fall as the interval grows; a cache that served blocks says so
    assert rows["deepcache:interval=3"]["flops_ratio"] < rows["deepcache:interval=2"]["flops_ratio"] < 1
    assert rows["deepcache:interval=2"]["blocks_reused"] > 0
    assert rows["peer-fbcache:threshold=1"]["flops_ratio"] < 1
    with Image.open(plot) as image:
        assert image.size[0] > 600


def test_generate_compare_puts_plain_and_accelerated_side_by_side(tmp_path):
    out = tmp_path / "cmp.png"
    args = ["generate", "--model", "tiny-random-flux", "--prompt", "a red circle", "--steps", "4"]
    result = runner.invoke(
        app, [*args, "--methods", "deepcache:interval=2", "--compare", "--out", str(out)], terminal_width=300
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "speedup" in text and "FLOPs ratio" in text and "PSNR" in text
    width, height = Image.open(out).size
    assert width > height  # two panels next to each other


def test_compare_measures_the_two_calls():
    """The comparison's images are the plain pipeline's and the method's, its FLOPs are counted."""
    import numpy as np

    from ditaccel import AcceleratedPipeline
    from ditaccel.compare import compare
    from ditaccel.pipelines import GenerationRequest
    from ditaccel.testing import tiny_pipeline

    pipe = tiny_pipeline("tiny-random-flux")
    pipe.set_progress_bar_config(disable=True)
    request = GenerationRequest(prompt="a red circle", seed=3, steps=4, height=32, width=32)
    result = compare(pipe, "deepcache:interval=2", lambda acc: acc.adapter.build_call(request))
    plain = AcceleratedPipeline.from_pipe(pipe, "none")
    expected = plain(**plain.adapter.build_call(request)).images[0]
    plain.remove()
    assert np.array_equal(np.asarray(result.plain), np.asarray(expected))
    assert not np.array_equal(np.asarray(result.accelerated), np.asarray(expected))
    assert 0 < result.flops_ratio < 1 and result.plain_gflops > 0
    assert result.stats.blocks_reused > 0
    same = compare(pipe, "deepcache:interval=1", lambda acc: acc.adapter.build_call(request))
    assert same.flops_ratio == 1.0 and same.psnr_db == float("inf")
    with pytest.raises(ValueError, match="runs must be >= 1"):
        compare(pipe, "none", lambda acc: {}, runs=0)


def test_generate_prints_no_deprecation_warning(tmp_path):
    """A folder model goes through diffusers' from_pretrained, which warns on old argument names."""
    exe = shutil.which("ditaccel")
    args = [exe, "generate", "--model", "shapes-flux", "--prompt", "a red circle", "--steps", "2"]
    run = subprocess.run(
        [*args, "--out", str(tmp_path / "o.png")], capture_output=True, text=True, check=True
    )
    assert "deprecated" not in run.stdout + run.stderr
