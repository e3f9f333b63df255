"""The shared context knows step, step count, CFG branch and token layout, and resets per call."""

import dataclasses

import numpy as np
import pytest
from conftest import run

from ditaccel import AcceleratedPipeline
from ditaccel.methods import Method, MethodConfig, register_method
from ditaccel.testing import TINY_MODELS


@dataclasses.dataclass(frozen=True)
class _ProbeConfig(MethodConfig):
    """Test-only method: records every forward's StepInfo and counts state creations."""


@register_method("test-probe")
class _Probe(Method):
    config_class = _ProbeConfig

    def apply(self, context):
        self.seen, self.created = [], 0
        self.original = context.enter_forward

        def enter(*args, **kwargs):
            info = self.original(*args, **kwargs)
            self.seen.append(info)
            state = context.state("probe", self._new_state)
            state.append(info.step)
            return info

        context.enter_forward = enter

    def _new_state(self):
        self.created += 1
        return []

    def remove(self, context):
        context.enter_forward = self.original


def _probe(acc):
    return acc._method_objects[0]


# forwards per step for the example calls: separate cond/uncond forwards for true CFG
_FORWARDS_PER_STEP = {"tiny-random-qwen-image": 2, "tiny-random-qwen-image-edit": 2, "tiny-random-wan": 2}


@pytest.mark.parametrize("name", TINY_MODELS)
def test_steps_branches_and_layout(name, make_pipe):
    acc = AcceleratedPipeline.from_pipe(make_pipe(name), methods="test-probe")
    run(acc, name, steps=3)
    seen = _probe(acc).seen
    per_step = _FORWARDS_PER_STEP.get(name, 1)
    assert [(i.step, i.branch) for i in seen] == [(s, b) for s in range(3) for b in range(per_step)]
    assert all(i.total == 3 for i in seen)
    layout = seen[0].layout
    frames, rows, cols = layout.grid
    assert frames * rows * cols == layout.image > 0
    if name in ("tiny-random-flux-kontext", "tiny-random-qwen-image-edit"):
        assert layout.reference > 0
    else:
        assert layout.reference == 0
    # one state per branch, created at the first step and kept through the call
    assert _probe(acc).created == per_step
    assert acc.context.cfg.enabled == (
        name
        not in (
            "tiny-random-flux",
            "tiny-random-flux-kontext",
            "tiny-random-flux-fill",
            "tiny-random-flux-controlnet",
        )
    )


def test_true_cfg_gives_two_branches_with_names(make_pipe):
    name = "tiny-random-flux"
    acc = AcceleratedPipeline.from_pipe(make_pipe(name), methods="test-probe")
    run(acc, name, steps=2, negative_prompt="blurry", true_cfg_scale=2.0)
    seen = _probe(acc).seen
    assert [(i.step, i.branch, i.branch_name) for i in seen] == [
        (0, 0, "cond"), (0, 1, "uncond"), (1, 0, "cond"), (1, 1, "uncond")
    ]  # fmt: skip
    assert acc.context.cfg.separate


def test_state_resets_per_call_even_when_pipeline_called_directly(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    acc = AcceleratedPipeline.from_pipe(pipe, methods="test-probe")
    run(acc, name, steps=2)
    run(pipe, name, steps=3)  # bypasses AcceleratedPipeline.__call__
    probe = _probe(acc)
    assert probe.created == 2
    assert [i.step for i in probe.seen] == [0, 1, 0, 1, 2]
    assert acc.stats.steps == 3  # stats follow the direct call too


def test_state_resets_on_resolution_change(make_pipe):
    name = "tiny-random-flux"
    acc = AcceleratedPipeline.from_pipe(make_pipe(name), methods="test-probe")
    run(acc, name, steps=2)
    run(acc, name, steps=2, height=48, width=48)
    assert _probe(acc).created == 2
    assert _probe(acc).seen[-1].layout.grid == (1, 6, 6)


def test_two_prompts_in_a_row_match_fresh_pipelines(make_pipe):
    name = "tiny-random-flux"
    acc = AcceleratedPipeline.from_pipe(make_pipe(name), methods="test-probe")
    a = run(acc, name, prompt="a red circle", seed=1)
    b = run(acc, name, prompt="a blue square", seed=2)
    assert np.array_equal(a, run(make_pipe(name), name, prompt="a red circle", seed=1))
    assert np.array_equal(b, run(make_pipe(name), name, prompt="a blue square", seed=2))
