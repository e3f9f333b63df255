"""Offloading with methods on: diffusers' model CPU offload, sequential CPU offload and group
offloading (block and leaf level), enabled before or after wrapping, compose with every method's
hooks: the offloaded accelerated pipeline computes what the same accelerated pipeline computes
without offloading (on CPU both devices are the CPU, so the hooks run but nothing moves; the GPU
cells are in ``benchmarks/gpu_check.sh``)."""

import numpy as np
import pytest
import torch
from conftest import run, with_profile

from ditaccel import AcceleratedPipeline

FLUX, KONTEXT = "tiny-random-flux", "tiny-random-flux-kontext"
CPU = torch.device("cpu")


def _model(pipe):
    pipe.enable_model_cpu_offload(device="cpu")


def _sequential(pipe):
    """What ``enable_sequential_cpu_offload`` does to each component, done to the transformer: on
    this CPU-only torch / transformers the whole-pipeline call fails in the plain pipeline already
    (accelerate cannot rebuild the CLIP embedding's weight from the meta device); the whole
    pipeline's cell is in the GPU check."""
    from accelerate import cpu_offload

    cpu_offload(pipe.transformer, execution_device=CPU, offload_buffers=True)


def _group(offload_type):
    def enable(pipe):
        pipe.transformer.enable_group_offload(
            onload_device=CPU, offload_device=CPU, offload_type=offload_type, num_blocks_per_group=1
        )

    return enable


OFFLOADS = {
    "model": _model,
    "sequential": _sequential,
    "group-block": _group("block_level"),
    "group-leaf": _group("leaf_level"),
}
# (pipeline, method): settings that serve cached values on the tiny pipelines' 6 steps
METHODS = [
    (FLUX, "deepcache:interval=2"),
    (FLUX, "adaptive-cache:threshold=0.5,order=1"),
    (FLUX, "calibrated-cache:flops_ratio=0.5"),
    (FLUX, "sparse-attention:density=0.5"),
    (FLUX, "peer-fbcache"),
    (KONTEXT, "region-edit:threshold=1"),
    (KONTEXT, "block-external:refresh=3"),
    (KONTEXT, "block-external:refresh=3,mode=kv+region-edit:threshold=1"),
    (KONTEXT, "context-prune:keep=0.5,refresh=3"),
    (KONTEXT, "context-prune:keep=0.5,refresh=3,reuse=true"),
]
STEPS = 6


@pytest.mark.parametrize("offload", list(OFFLOADS))
@pytest.mark.parametrize(("name", "method"), METHODS)
def test_offloaded_accelerated_pipeline_computes_the_same(make_pipe, tmp_path, offload, name, method):
    spec = with_profile(method, make_pipe(name), tmp_path, STEPS)
    expected = run(AcceleratedPipeline.from_pipe(make_pipe(name), spec), name, steps=STEPS)

    before = make_pipe(name)  # offloaded, then wrapped
    OFFLOADS[offload](before)
    acc = AcceleratedPipeline.from_pipe(before, spec)
    np.testing.assert_array_equal(run(acc, name, steps=STEPS), expected)
    np.testing.assert_array_equal(run(acc, name, steps=STEPS), expected)  # a second call too

    after = AcceleratedPipeline.from_pipe(make_pipe(name), spec)  # wrapped, then offloaded
    OFFLOADS[offload](after)
    np.testing.assert_array_equal(run(after, name, steps=STEPS), expected)


@pytest.mark.parametrize("offload", list(OFFLOADS))
def test_offloaded_wrapper_without_methods_is_the_offloaded_plain_pipeline(make_pipe, offload):
    plain = make_pipe(FLUX)
    OFFLOADS[offload](plain)
    expected = run(plain, FLUX, steps=STEPS)
    wrapped = make_pipe(FLUX)
    OFFLOADS[offload](wrapped)
    np.testing.assert_array_equal(
        run(AcceleratedPipeline.from_pipe(wrapped, []), FLUX, steps=STEPS), expected
    )


@pytest.mark.parametrize("offload", list(OFFLOADS))
def test_removing_the_methods_leaves_the_offload_in_place(make_pipe, offload):
    plain = make_pipe(KONTEXT)
    expected = run(plain, KONTEXT, steps=STEPS)
    pipe = make_pipe(KONTEXT)
    OFFLOADS[offload](pipe)
    hooked = type(getattr(pipe.transformer, "_hf_hook", None))  # model offload re-arms a new one per call
    acc = AcceleratedPipeline.from_pipe(pipe, "block-external:refresh=3+region-edit:threshold=1")
    run(acc, KONTEXT, steps=STEPS)
    acc.remove()
    assert type(getattr(pipe.transformer, "_hf_hook", None)) is hooked  # accelerate's hook is still there
    for _ in range(2):
        np.testing.assert_array_equal(run(pipe, KONTEXT, steps=STEPS), expected)
