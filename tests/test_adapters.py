"""Adapters describe each family: blocks, attention sites, requests turned into calls."""

import pytest
import torch
from PIL import Image

from ditaccel import GenerationRequest, adapter_for, supported_pipelines
from ditaccel.pipelines import BlockIO
from ditaccel.testing import TINY_MODELS

# (block groups with their stream kind, attention kinds) of each tiny model
EXPECTED = {
    "tiny-random-flux": (
        {"transformer_blocks": "joint", "single_transformer_blocks": "single"},
        {"joint", "self"},
    ),
    "tiny-random-sd3": ({"transformer_blocks": "joint"}, {"joint"}),
    "tiny-random-pixart": ({"transformer_blocks": "image"}, {"self", "cross"}),
    "tiny-random-qwen-image": ({"transformer_blocks": "joint"}, {"joint"}),
    "tiny-random-wan": ({"blocks": "image"}, {"self", "cross"}),
    "tiny-random-dit": ({"transformer_blocks": "image"}, {"self"}),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_blocks_and_attention_sites(name, make_pipe):
    pipe = make_pipe(name)
    adapter = adapter_for(pipe)
    denoiser = adapter.denoisers()[0]
    groups, kinds = EXPECTED[name]
    assert {g.name: g.stream for g in adapter.block_groups(denoiser)} == groups
    assert all(len(g) == 2 for g in adapter.block_groups(denoiser))
    sites = adapter.attention_sites(denoiser)
    assert {s.kind for s in sites} == kinds
    modules = dict(denoiser.named_modules())
    assert all(modules[s.name] is s.module for s in sites)
    assert [n for n, _ in adapter.blocks(denoiser)][0].endswith(".0")


def test_block_io_round_trip():
    io = BlockIO(hidden_out=1, encoder_out=0)
    h, e = torch.ones(1), torch.zeros(1)
    assert io.split_output(io.join_output(h, e)) == (h, e)
    bare = BlockIO(encoder_arg=None)
    assert bare.split_output(h) == (h, None) and bare.join_output(h, None) is h
    assert io.split_input((h,), {"encoder_hidden_states": e}) == (h, e)


def test_every_tiny_pipeline_is_supported(make_pipe):
    names = supported_pipelines()
    for model in TINY_MODELS:
        assert type(make_pipe(model)).__name__ in names


def test_requests_become_calls(make_pipe):
    image, mask = Image.new("RGB", (32, 32)), Image.new("L", (32, 32))
    kontext = adapter_for(make_pipe("tiny-random-flux-kontext"))
    call = kontext.build_call(GenerationRequest(prompt="p", image=image, height=32, width=32, steps=3))
    assert call["max_area"] == 32 * 32 and call["num_inference_steps"] == 3 and call["image"] is image
    with pytest.raises(ValueError, match="pass --image"):
        kontext.build_call(GenerationRequest(prompt="p"))
    with pytest.raises(ValueError, match="takes no mask"):
        kontext.build_call(GenerationRequest(prompt="p", image=image, mask=mask))
    fill = adapter_for(make_pipe("tiny-random-flux-fill"))
    with pytest.raises(ValueError, match="needs a mask"):
        fill.build_call(GenerationRequest(prompt="p", image=image))
    dit = adapter_for(make_pipe("tiny-random-dit"))
    assert dit.build_call(GenerationRequest(prompt="circle, square"))[
        "class_labels"
    ] == dit.pipeline.get_label_ids(["circle", "square"])
    with pytest.raises(ValueError, match="native"):
        dit.build_call(GenerationRequest(prompt="circle", height=64, width=64))
    flux = adapter_for(make_pipe("tiny-random-flux"))
    assert flux.build_call(GenerationRequest(prompt="p", negative_prompt="n"))["true_cfg_scale"] > 1


def test_flux_without_guidance_embedding_uses_true_cfg(make_pipe):
    pipe = make_pipe("tiny-random-flux")
    pipe.transformer.register_to_config(guidance_embeds=False)  # as a model trained without distillation
    call = adapter_for(pipe).build_call(GenerationRequest(prompt="p", guidance_scale=3.0))
    assert call["true_cfg_scale"] == 3.0 and call["negative_prompt"] == "" and "guidance_scale" not in call
    assert adapter_for(pipe).cfg_mode(call).separate
