"""``pipe.transformer.compile()`` with methods on: the compiled wrapped pipeline computes what the
eager one computes, on the first call and the next. Traced with Dynamo only (``backend="eager"``):
graph breaks, guards and recompiles depend on the tracing, not on the code generator, and tracing
keeps the suite fast; ``benchmarks/compile_check.py`` counts breaks and recompiles per method
(``docs/results/compile_check.json``) and ``benchmarks/gpu_check.py`` times inductor on a GPU."""

import numpy as np
import pytest
import torch._dynamo as dynamo
from conftest import run, with_profile

from ditaccel import AcceleratedPipeline

FLUX, KONTEXT, QWEN = "tiny-random-flux", "tiny-random-flux-kontext", "tiny-random-qwen-image"
STEPS = 4
CASES = [
    (FLUX, "none"),
    (FLUX, "deepcache:interval=2"),
    (FLUX, "adaptive-cache:threshold=0.5,order=1"),
    (FLUX, "calibrated-cache:flops_ratio=0.5"),
    (FLUX, "sparse-attention:density=0.5"),
    (FLUX, "block-external:external=text,refresh=2"),
    (FLUX, "peer-fbcache"),
    (QWEN, "deepcache:interval=2"),
    (QWEN, "sparse-attention:density=0.5"),
    (KONTEXT, "block-external:refresh=2"),
    (KONTEXT, "region-edit:threshold=0.99"),
    (KONTEXT, "context-prune:keep=0.5,refresh=3"),
    (KONTEXT, "context-prune:keep=0.5,refresh=3,reuse=true"),
]


@pytest.mark.parametrize(("name", "spec"), CASES)
def test_compiled_wrapped_pipeline_computes_what_eager_computes(name, spec, make_pipe, tmp_path):
    spec = with_profile(spec, make_pipe(name), tmp_path, STEPS)
    eager = run(AcceleratedPipeline.from_pipe(make_pipe(name), spec), name, steps=STEPS)
    pipe = make_pipe(name)
    acc = AcceleratedPipeline.from_pipe(pipe, spec)
    pipe.transformer.compile(backend="eager")
    dynamo.reset()
    try:
        for _ in range(2):
            np.testing.assert_allclose(run(acc, name, steps=STEPS), eager, atol=1e-5)
    finally:
        dynamo.reset()


@pytest.mark.parametrize("name", [FLUX, QWEN])
def test_regional_inductor_compilation_matches_eager(name, make_pipe):
    """diffusers' regional compilation (``compile_repeated_blocks``) through inductor, a cache on:
    the code generator's output, not only the tracing, matches eager."""
    spec = "deepcache:interval=2"
    eager = run(AcceleratedPipeline.from_pipe(make_pipe(name), spec), name, steps=STEPS)
    pipe = make_pipe(name)
    acc = AcceleratedPipeline.from_pipe(pipe, spec)
    pipe.transformer.compile_repeated_blocks()
    dynamo.reset()
    try:
        np.testing.assert_allclose(run(acc, name, steps=STEPS), eager, atol=1e-4)
        assert acc.stats.blocks_reused > 0
    finally:
        dynamo.reset()
