"""The embedded shapes-flux pipeline: loads offline by name and folder, generates at 64/128/256,
edits, and the bench fills shapes_acc and the edit metrics."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ditaccel import AcceleratedPipeline, GenerationRequest, models
from ditaccel.cli import app
from ditaccel.media import output_images

MAX_FOLDER_BYTES = 30 * 2**20


def test_folder_is_complete_and_small():
    folder = models.path("shapes-flux")
    assert (folder / "model_index.json").is_file()
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= MAX_FOLDER_BYTES
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pkl"))  # safetensors only


@pytest.mark.parametrize("size", [64, 128, 256])
def test_generates_at_each_size(size):
    pipe = AcceleratedPipeline.from_pretrained("shapes-flux")
    pipe.set_progress_bar_config(disable=True)
    entry = models.get("shapes-flux")
    request = GenerationRequest(prompt="a large red circle in the centre, plain background", steps=3,
                                height=size, width=size, output_type="np", extra=dict(entry.call_defaults))  # fmt: skip
    images = output_images(pipe(**pipe.adapter.build_call(request)))
    assert images.shape == (1, size, size, 3) and np.isfinite(images).all()


def test_loads_as_kontext_and_edits():
    entry = models.get("shapes-flux")
    pipe = AcceleratedPipeline.from_pretrained("shapes-flux", pipeline_class=entry.pipeline_for("edit"))
    assert type(pipe.pipeline).__name__ == "FluxKontextPipeline"
    pipe.set_progress_bar_config(disable=True)
    case = entry.cases["edit"]()[0]
    request = GenerationRequest(prompt=case.prompt, image=case.image, steps=3, height=128, width=128,
                                output_type="np", extra=dict(entry.call_defaults))  # fmt: skip
    assert output_images(pipe(**pipe.adapter.build_call(request))).shape == (1, 128, 128, 3)
    assert pipe.stats.records and all(r.blocks_run == 6 for r in pipe.stats.records)


@pytest.mark.parametrize("task", ["t2i", "edit"])
def test_bench_fills_checker_metrics(tmp_path, task):
    out = tmp_path / "bench.json"
    args = ["bench", "--model", "shapes-flux", "--task", task, "--methods", "none", "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--prompts", "2", "--runs", "1", "--steps", "4"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["results"]
    assert 0.0 <= row["shapes_acc"] <= 1.0
    if task == "edit":
        assert row["preserve_psnr_db"] > 0
