"""The shapes-flux training script runs every stage and saves a loadable pipeline (a few steps)."""

import json
from dataclasses import replace

import numpy as np
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
