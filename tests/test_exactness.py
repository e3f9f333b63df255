"""With no method the accelerated pipeline is the plain pipeline, bit for bit, on every family."""

import numpy as np
import pytest
from conftest import run

from ditaccel import AcceleratedPipeline
from ditaccel.testing import TINY_MODELS


@pytest.mark.parametrize("name", TINY_MODELS)
def test_no_methods_is_bit_identical(name, make_pipe):
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=3)
    accelerated = AcceleratedPipeline.from_pipe(pipe, methods=[])
    assert np.array_equal(run(accelerated, name, steps=3), plain)
    assert accelerated.stats.steps == 3
    assert accelerated.stats.forwards >= 3
    # "none" is the same thing spelled out, and removing the wrapper leaves the plain pipeline
    accelerated.remove()
    with_none = AcceleratedPipeline.from_pipe(pipe, methods="none")
    assert np.array_equal(run(with_none, name, steps=3), plain)
    with_none.remove()
    assert np.array_equal(run(pipe, name, steps=3), plain)


def test_hooks_stay_on_their_instance(make_pipe):
    first, second = make_pipe("tiny-random-flux"), make_pipe("tiny-random-flux")
    cls_forward = type(first.transformer).forward
    accelerated = AcceleratedPipeline.from_pipe(first, methods=[])
    assert type(first.transformer).forward is cls_forward
    assert "forward" in vars(first.transformer)  # instance attribute, set by the diffusers hook
    assert not hasattr(second.transformer, "_diffusers_hook")
    accelerated.remove()
    assert first.transformer._diffusers_hook.get_hook("ditaccel.step_tracker") is None
