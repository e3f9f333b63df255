"""The shapes-flux training script runs every stage and saves a loadable pipeline (a few steps)."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import FluxKontextPipeline, FluxPipeline
from PIL import Image

from ditaccel.models.train_shapes_flux import TrainConfig, train

MAX_FOLDER_BYTES = 30 * 2**20


def test_smoke_training_saves_a_loadable_pipeline(tmp_path):
    out = train(TrainConfig.smoke(tmp_path / "model"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    assert size <= MAX_FOLDER_BYTES
    assert (out / "training.json").is_file()
    t2i = FluxPipeline.from_pretrained(out)
    t2i.set_progress_bar_config(disable=True)
    kwargs = dict(height=64, width=64, num_inference_steps=2, max_sequence_length=32, output_type="np")
    image = t2i(
        "a small red circle on the left, plain background",
        **kwargs,
        generator=torch.Generator().manual_seed(0),
    )
    assert image.images.shape == (1, 64, 64, 3)
    edit = FluxKontextPipeline.from_pretrained(out)
    edit.set_progress_bar_config(disable=True)
    source = Image.fromarray((image.images[0] * 255).astype("uint8"))
    edited = edit(
        image=source, prompt="make the circle green", max_area=64 * 64, _auto_resize=False, **kwargs
    )
    assert edited.images.shape == (1, 64, 64, 3)


def test_training_continues_from_a_saved_pipeline(tmp_path):
    first = train(TrainConfig.smoke(tmp_path / "first"))
    second = train(replace(TrainConfig.smoke(tmp_path / "second"), init=first))
    log = json.loads((second / "training.json").read_text())
    assert "vae" not in log and log["continues"]["config"]["out"] == str(first)
    before = FluxPipeline.from_pretrained(first).transformer.state_dict()
    after = FluxPipeline.from_pretrained(second).transformer.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_token_share_follows_flux_token_order():
    from ditaccel.models.train_shapes_flux import _token_share

    mask = np.zeros((128, 128), bool)
    mask[:8, 8:16] = True  # exactly the second token of the first row
    share = _token_share(mask, 128)
    assert share.shape == (256,) and share[1] == 1.0 and share.sum() == 1.0
    mask[:8, :4] = True  # half of the first token
    assert _token_share(mask, 128)[0] == 0.5


def test_curriculum_favours_easy_items_then_anneals_to_uniform():
    from ditaccel.models.train_shapes_flux import Bucket, _item_weights

    cfg = TrainConfig(curriculum=0.4, easy_boost=3.0)
    easiness = torch.tensor([0.0, 1.0, 2.0])
    bucket = Bucket(
        False, torch.zeros(3, 1), None, torch.zeros(3, 1), torch.zeros(3, 1), torch.zeros(3, 1), easiness
    )
    start = _item_weights(bucket, 0.0, cfg)
    assert np.allclose(start / start[0], [1.0, 4.0, 16.0])
    assert np.allclose(_item_weights(bucket, 0.4, cfg), 1 / 3)
    assert np.allclose(_item_weights(bucket, 0.9, cfg), 1 / 3)


def test_training_can_take_the_vae_of_a_saved_pipeline(tmp_path):
    first = train(TrainConfig.smoke(tmp_path / "first"))
    second = train(
        replace(TrainConfig.smoke(tmp_path / "second"), vae_from=first, checkpoints=tmp_path / "ck")
    )
    log = json.loads((second / "training.json").read_text())
    assert log["vae"]["from"] == str(first) and "denoiser" in log
    assert any((tmp_path / "ck").iterdir())  # an EMA checkpoint per evaluation
    before = FluxPipeline.from_pretrained(first).vae.state_dict()
    after = FluxPipeline.from_pretrained(second).vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _weights(folder):
    return FluxPipeline.from_pretrained(folder).transformer.state_dict()


def test_a_resumed_run_is_the_uninterrupted_run(tmp_path):
    """Stopped after 2 of 4 steps and resumed from its state folder, a run ends with the same weights,
    bit for bit, as the run that never stopped (weights, EMA, optimiser moments, both random streams)."""
    whole = train(replace(TrainConfig.smoke(tmp_path / "whole"), steps=4, state=tmp_path / "whole-state"))
    cut = replace(TrainConfig.smoke(tmp_path / "cut"), steps=4, state=tmp_path / "cut-state")
    train(replace(cut, stop_after=2))
    progress = json.loads((tmp_path / "cut-state" / "progress.json").read_text())["progress"]
    assert progress["step"] == 2
    resumed = train(cut)
    a, b = _weights(whole), _weights(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((resumed / "training.json").read_text())
    assert [leg["step"] for leg in log["denoiser"]["legs"]] == [0, 2] and log["denoiser"]["steps"] == 4
    assert "vae" in log  # the stages before the denoiser are carried into the resumed run's record


def test_a_state_exports_as_a_model_folder_while_its_run_goes_on(tmp_path):
    """A checkpoint of a run in progress ships as a model folder whose record is the trainer's own
    (stop_after at the state's step, the model it fine-tuned from under ``continues``); exporting a
    later checkpoint over it keeps that model's record, not the earlier export's."""
    from ditaccel.models.train_state import export

    first = train(TrainConfig.smoke(tmp_path / "first"))
    cfg = replace(TrainConfig.smoke(tmp_path / "run"), init=first, steps=4, state=tmp_path / "state")
    train(replace(cfg, stop_after=2))
    shipped = export(tmp_path / "state", first)
    log = json.loads((shipped / "training.json").read_text())
    assert log["config"]["stop_after"] == 2 and log["denoiser"]["steps"] == 2
    assert log["continues"]["config"]["out"] == str(tmp_path / "first") and "denoiser" in log["continues"]
    a, b = _weights(shipped), _weights(tmp_path / "state" / "pipeline")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not any("_name_or_path" in json.loads(f.read_text()) for f in shipped.glob("*/config.json"))
    FluxKontextPipeline.from_pretrained(shipped)  # the editing pipeline loads from it too
    train(cfg)  # the run goes on to its end and is exported again over the same folder
    log = json.loads((export(tmp_path / "state", first) / "training.json").read_text())
    assert log["config"]["stop_after"] == 4 and log["continues"]["config"]["out"] == str(tmp_path / "first")


def test_resuming_with_other_settings_is_refused_unless_amended(tmp_path):
    import pytest

    cfg = replace(TrainConfig.smoke(tmp_path / "a"), steps=4, stop_after=2, state=tmp_path / "state")
    train(cfg)
    with pytest.raises(ValueError, match="lr"):
        train(replace(cfg, lr=1e-4, stop_after=3))
    train(replace(cfg, lr=1e-4, stop_after=3, amend=("lr",)))
    progress = json.loads((tmp_path / "state" / "progress.json").read_text())["progress"]
    assert progress["step"] == 3 and progress["legs"][-1]["amend"] == ["lr"]


def test_parse_labels_name_background_and_objects_per_token():
    from ditaccel import shapes
    from ditaccel.models.train_shapes_flux import PARSE_CLASSES, parse_labels

    scene = shapes.Scene((shapes.Shape("square", "blue", "large", "centre"),), "stripes")
    labels = parse_labels(scene, 128).reshape(16, 16)
    blue_square = (
        len(shapes.BACKGROUNDS) + list(shapes.COLORS).index("blue") * 3 + shapes.KINDS.index("square")
    )
    assert labels[8, 8] == blue_square and labels[0, 0] == shapes.BACKGROUNDS.index("stripes")
    assert (
        labels.max() < PARSE_CLASSES and (labels == blue_square).sum() == 16
    )  # 0.25 of the side: 4x4 tokens


def test_edit_items_mark_the_tokens_the_edit_leaves_alone():
    from ditaccel import shapes
    from ditaccel.models import shapes_flux as arch
    from ditaccel.models.train_shapes_flux import _token_share, build_buckets

    pipe = arch.build_pipeline([*shapes.vocabulary(), ","])
    cfg = replace(TrainConfig.smoke(None), buckets={"edit-64": 3, "t2i-64": 1}, parse_weight=0.1)
    buckets = build_buckets(pipe, cfg, np.random.default_rng(5))
    again = np.random.default_rng(5)
    pairs = [shapes.sample_edit(again) for _ in range(3)]
    expected = np.stack([1 - _token_share(shapes.edit_mask(p, 64), 64) for p in pairs])
    assert np.allclose(buckets["edit-64"].keep.numpy(), expected)
    assert buckets["t2i-64"].keep is None and buckets["edit-64"].labels.shape == (3, 64)


def test_anchor_focus_is_one_map_that_covers_every_shape_a_scene_can_hold():
    """focus="anchors" weighs tokens by position alone (unbiased), and every shape lies inside."""
    from ditaccel import shapes
    from ditaccel.models import shapes_flux as arch
    from ditaccel.models.train_shapes_flux import _token_share, anchor_focus, build_buckets

    area = anchor_focus(128)
    for kind in shapes.KINDS:
        for size in shapes.SIZES:
            for position in shapes.ANCHORS:
                covered = shapes.shape_coverage(shapes.Shape(kind, "red", size, position), 128)
                assert (covered <= area + 1e-6).all(), (kind, size, position)
    assert 0.25 < area.mean() < 0.4  # the anchors' boxes, not the whole picture
    pipe = arch.build_pipeline([*shapes.vocabulary(), ","])
    cfg = replace(TrainConfig.smoke(None), buckets={"t2i-64": 3}, focus="anchors")
    focus = build_buckets(pipe, cfg, np.random.default_rng(5))["t2i-64"].focus.numpy()
    assert np.allclose(focus, _token_share(anchor_focus(64), 64)[None].repeat(3, 0))
    objects = build_buckets(pipe, replace(cfg, focus="objects"), np.random.default_rng(5))["t2i-64"].focus
    assert not np.allclose(objects.numpy(), focus)  # the default weighs the target's own objects
    with pytest.raises(ValueError, match="focus must be"):
        TrainConfig(focus="everything")


def test_gpu_training_script_dry_run(tmp_path):
    """benchmarks/train_gpu.sh at toy size on the CPU: it fine-tunes the shipped weights (the VAE
    decoder first, encoder kept), writes the model, its state and a held-out evaluation, and a second
    call resumes the state."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRAIN_GPU_DRY": "1"}
    for _ in range(2):
        run = subprocess.run(["bash", "benchmarks/train_gpu.sh", str(tmp_path)], cwd=root, env=env,
                             capture_output=True, text=True)  # fmt: skip
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "resumed from" in run.stdout
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert {"t2i", "edit", "preserve_psnr_db", "background_ok"} <= set(evaluation)
    shipped = FluxPipeline.from_pretrained(root / "ditaccel" / "models" / "shapes-flux").vae
    tuned = FluxPipeline.from_pretrained(tmp_path / "model").vae
    assert all(
        torch.equal(a, b)
        for a, b in zip(shipped.encoder.parameters(), tuned.encoder.parameters(), strict=True)
    )
    assert any(
        not torch.equal(a, b)
        for a, b in zip(shipped.decoder.parameters(), tuned.decoder.parameters(), strict=True)
    )
