"""Fuzzed inputs: masks, profile files and call arguments. A bad one is a clear ValueError or
TypeError before the transformer runs, never a crash deep in a forward pass; a good one runs."""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ditaccel import AcceleratedPipeline
from ditaccel.methods import available_methods
from ditaccel.testing import example_call, synthetic_profile, tiny_pipeline

KONTEXT, FLUX = "tiny-random-flux-kontext", "tiny-random-flux"
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _counting(pipe) -> list:
    calls: list = []
    pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


# --- masks ------------------------------------------------------------------------------------------
@st.composite
def masks(draw, size: int):
    """(mask in some container, whether it is a valid mask for a ``size`` image)."""
    side = draw(st.sampled_from([size, size // 2, size + 8]))
    fill = draw(st.sampled_from(["empty", "full", "box"]))
    pixels = np.zeros((side, side), np.uint8)
    if fill == "full":
        pixels[:] = 255
    elif fill == "box":
        pixels[side // 4 : side // 2, side // 4 : side // 2] = 255
    form = draw(
        st.sampled_from(
            ["L", "RGB", "RGBA", "bool", "uint8", "float", "hw1", "chw", "torch-hw", "list", "two"]
        )
    )
    mask = {
        "L": lambda: Image.fromarray(pixels),
        "RGB": lambda: Image.fromarray(pixels).convert("RGB"),
        "RGBA": lambda: Image.fromarray(pixels).convert("RGBA"),
        "bool": lambda: pixels > 0,
        "uint8": lambda: pixels,
        "float": lambda: pixels / 255.0,
        "hw1": lambda: pixels[..., None],
        "chw": lambda: torch.from_numpy(pixels / 255.0)[None].float(),
        "torch-hw": lambda: torch.from_numpy(pixels > 0),
        "list": lambda: [Image.fromarray(pixels)],
        "two": lambda: [Image.fromarray(pixels), Image.fromarray(pixels)],
    }[form]()
    valid = side == size and fill != "empty" and form != "two"
    return mask, valid


@pytest.fixture(scope="module")
def kontext_mask_pipe():
    pipe = tiny_pipeline(KONTEXT)
    pipe.set_progress_bar_config(disable=True)
    return AcceleratedPipeline.from_pipe(pipe, methods="region-edit:source=mask")


@FUZZ
@given(data=st.data())
def test_region_edit_masks(kontext_mask_pipe, data):
    call = example_call(KONTEXT, steps=2)
    size = call["height"]
    mask, valid = data.draw(masks(size))
    calls = _counting(kontext_mask_pipe.pipeline)
    if valid:
        out = kontext_mask_pipe(**call, mask_image=mask)
        assert np.isfinite(out.images).all()
        return
    with pytest.raises(ValueError, match="mask"):
        kontext_mask_pipe(**call, mask_image=mask)
    assert not calls


@pytest.mark.parametrize("bad", ["a path that is no image", {"mask": 1}, 3.5])
def test_region_edit_refuses_what_is_no_mask(kontext_mask_pipe, bad):
    calls = _counting(kontext_mask_pipe.pipeline)
    with pytest.raises((ValueError, TypeError), match="mask"):
        kontext_mask_pipe(**example_call(KONTEXT, steps=2), mask_image=bad)
    assert not calls


# --- profile files ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def profile_text(tmp_path_factory) -> str:
    profile = synthetic_profile(
        tiny_pipeline(FLUX), tensors={}, forward_gflops=4, attention_layers=["transformer_blocks.0.attn"],
        attention=[0.5], attention_by_head=[[0.5, 0.5]],
    )  # fmt: skip
    return profile.save(tmp_path_factory.mktemp("p") / "p.json").read_text()


def _mutations(draw, data: dict) -> tuple[str, str]:
    """A mutated profile file and what was done to it."""
    kind = draw(
        st.sampled_from(["truncate", "drop", "extra", "retype", "other-model", "shorter-list", "none"])
    )
    data = json.loads(json.dumps(data))
    key = draw(st.sampled_from(sorted(data)))
    if kind == "truncate":
        text = json.dumps(data)
        return text[: draw(st.integers(0, len(text) - 1))], kind
    if kind == "drop":
        data.pop(key)
    elif kind == "extra":
        data[draw(st.sampled_from(["surprise", "weights", "code"]))] = [1, 2, 3]
    elif kind == "retype":
        data[key] = draw(st.sampled_from(["text", -3, None, {"a": 1}, [[]]]))
    elif kind == "other-model":
        data["fingerprint"] = "0123456789abcdef"
    elif kind == "shorter-list" and isinstance(data[key], list) and data[key]:
        data[key] = data[key][:-1]
    return json.dumps(data), kind


@FUZZ
@given(data=st.data())
def test_profile_files(profile_text, tmp_path_factory, data):
    """Either the pipeline is refused at construction with a ValueError / TypeError naming the
    problem, or the profile is sound and a call runs."""
    text, kind = _mutations(data.draw, json.loads(profile_text))
    path = tmp_path_factory.mktemp("fuzz") / "p.json"
    path.write_text(text)
    pipe = tiny_pipeline(FLUX)
    pipe.set_progress_bar_config(disable=True)
    calls = _counting(pipe)
    spec = data.draw(st.sampled_from([f"calibrated-cache:profile={path},flops_ratio=0.5",
                                      f"sparse-attention:profile={path},block=16,dense_steps=0,dense_layers=0"]))  # fmt: skip
    try:
        acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    except (ValueError, TypeError) as exc:
        assert str(exc) and not calls
        return
    assert kind not in ("truncate", "extra", "other-model")  # these must never pass
    out = acc(**example_call(FLUX, steps=4))
    assert np.isfinite(out.images).all()


# --- call arguments ------------------------------------------------------------------------------------
SPECS = [
    spec
    for spec in (
        "deepcache:interval=2",
        "adaptive-cache:threshold=0.5,order=1",
        "sparse-attention:density=0.5,block=16,dense_steps=0,dense_layers=0",
        "block-external:external=text,refresh=2,warmup=1",
        "peer-fbcache:threshold=0.5",
        "peer-taylorseer:cache_interval=2",
    )
    if spec.split(":")[0] in available_methods()
]


@FUZZ
@given(
    spec=st.sampled_from(SPECS),
    images=st.integers(1, 3),
    side=st.sampled_from([32, 48, 40, 24]),
    steps=st.integers(1, 5),
)
def test_call_arguments_behave_as_on_the_plain_pipeline(spec, images, side, steps):
    """Whatever the batch, resolution and step count, the accelerated call fails exactly when the
    plain one does (with its error type), and otherwise gives an image of the same shape."""
    pipe = tiny_pipeline(FLUX)
    pipe.set_progress_bar_config(disable=True)
    call = dict(num_images_per_prompt=images, height=side, width=side)
    try:
        plain = pipe(**example_call(FLUX, steps=steps, **call)).images
    except Exception as exc:  # noqa: BLE001 - the plain pipeline's own refusal sets the expectation
        acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
        with pytest.raises(type(exc)):
            acc(**example_call(FLUX, steps=steps, **call))
        return
    acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    out = acc(**example_call(FLUX, steps=steps, **call)).images
    assert out.shape == plain.shape and np.isfinite(out).all()
