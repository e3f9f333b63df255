"""LoRA on a wrapped pipeline: loaded with ``load_lora_weights`` before or after wrapping, fused and
unfused, adapters switched with ``set_adapters`` between calls, the wrapper computes what the plain
LoRA pipeline computes (``methods=[]``: bit for bit), and a cache never carries state across a
change of weights."""

import numpy as np
import pytest
import torch
from conftest import run, with_profile

from ditaccel import AcceleratedPipeline

peft = pytest.importorskip("peft")  # the dev extra installs it

FLUX, KONTEXT = "tiny-random-flux", "tiny-random-flux-kontext"


def _make_lora(pipe, folder, seed: int) -> str:
    """A LoRA on the tiny FLUX transformer's attention projections with random (non-zero) weights,
    saved the way diffusers saves one; the transformer is left without it."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    config = LoraConfig(
        r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False
    )
    torch.manual_seed(seed)
    pipe.transformer.add_adapter(config, adapter_name="made")
    layers = {k: v * 4.0 for k, v in get_peft_model_state_dict(pipe.transformer, adapter_name="made").items()}
    type(pipe).save_lora_weights(folder, transformer_lora_layers=layers)
    pipe.transformer.delete_adapters("made")
    return str(folder)


@pytest.fixture
def loras(make_pipe, tmp_path):
    pipe = make_pipe(FLUX)
    first, second = tmp_path / "first", tmp_path / "second"
    return _make_lora(pipe, first, 1), _make_lora(pipe, second, 2)


def test_methods_none_is_the_plain_lora_pipeline_bit_for_bit(make_pipe, loras):
    first, second = loras
    plain = make_pipe(FLUX)
    without = run(plain, FLUX, steps=3)
    plain.load_lora_weights(first, adapter_name="first")
    expected = run(plain, FLUX, steps=3)
    assert not np.array_equal(expected, without)  # the LoRA changes the image

    before = make_pipe(FLUX)  # loaded, then wrapped
    before.load_lora_weights(first, adapter_name="first")
    assert np.array_equal(run(AcceleratedPipeline.from_pipe(before, []), FLUX, steps=3), expected)

    after = AcceleratedPipeline.from_pipe(make_pipe(FLUX), [])  # wrapped, then loaded
    after.load_lora_weights(first, adapter_name="first")
    assert np.array_equal(run(after, FLUX, steps=3), expected)

    plain.fuse_lora()
    after.fuse_lora()
    assert np.array_equal(run(after, FLUX, steps=3), run(plain, FLUX, steps=3))
    plain.unfuse_lora()
    after.unfuse_lora()  # (subtracting the product back rounds: compare with the plain pipeline's)
    unfused = run(plain, FLUX, steps=3)
    assert np.array_equal(run(after, FLUX, steps=3), unfused)
    assert np.allclose(unfused, expected, atol=1e-5)

    for pipe in (plain, after):
        pipe.load_lora_weights(second, adapter_name="second")
    for adapters, weights in ((["second"], [1.0]), (["first", "second"], [0.5, 0.7]), (["first"], [0.0])):
        plain.set_adapters(adapters, weights)
        after.set_adapters(adapters, weights)
        assert np.array_equal(run(after, FLUX, steps=3), run(plain, FLUX, steps=3)), adapters


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        (FLUX, "deepcache:interval=2"),
        (FLUX, "adaptive-cache:threshold=0.5"),
        (FLUX, "calibrated-cache:flops_ratio=0.5"),
        (FLUX, "sparse-attention:density=0.5"),
        (FLUX, "block-external:external=text,refresh=2"),
        (FLUX, "peer-fbcache"),
        (KONTEXT, "block-external:refresh=2"),
        (KONTEXT, "region-edit:threshold=0.99"),
        (KONTEXT, "context-prune:keep=0.5,refresh=3"),
        (KONTEXT, "context-prune:keep=0.5,refresh=3,reuse=true"),
    ],
)
def test_a_cache_never_serves_across_a_change_of_weights(name, spec, make_pipe, loras, tmp_path):
    """Each call of a wrapped pipeline whose adapter weights changed since its last call gives what
    a freshly wrapped pipeline with those weights gives: nothing cached under the old weights."""
    first, second = loras
    spec = with_profile(spec, make_pipe(name), tmp_path, 4)
    pipe = make_pipe(name)
    pipe.load_lora_weights(first, adapter_name="first")
    pipe.load_lora_weights(second, adapter_name="second")
    acc = AcceleratedPipeline.from_pipe(pipe, spec)
    outputs = []
    settings = [(["first"], [1.0]), (["second"], [1.0]), (["first", "second"], [0.3, 0.9])]
    for adapters, weights in settings:
        acc.set_adapters(adapters, weights)
        outputs.append(run(acc, name, steps=4))
    acc.remove()
    for (adapters, weights), served in zip(settings, outputs, strict=True):
        fresh_pipe = make_pipe(name)
        fresh_pipe.load_lora_weights(first, adapter_name="first")
        fresh_pipe.load_lora_weights(second, adapter_name="second")
        fresh_pipe.set_adapters(adapters, weights)
        fresh = AcceleratedPipeline.from_pipe(fresh_pipe, spec)
        assert np.array_equal(run(fresh, name, steps=4), served), adapters
    assert not np.array_equal(outputs[0], outputs[1])
