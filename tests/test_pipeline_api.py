"""AcceleratedPipeline behaves as a drop-in diffusers pipeline and fails clearly on bad input."""

import numpy as np
import pytest
from conftest import run

from ditaccel import AcceleratedPipeline, ModelNotFoundError
from ditaccel.testing import example_call


def test_from_pretrained_embedded_name():
    acc = AcceleratedPipeline.from_pretrained("tiny-random-dit", methods=[])
    assert type(acc.pipeline).__name__ == "DiTPipeline"
    assert "DiTPipeline" in repr(acc)


def test_unknown_model_offline_names_the_embedded_models():
    with pytest.raises(ModelNotFoundError, match="embedded models: .*tiny-random-flux"):
        AcceleratedPipeline.from_pretrained("someone/some-model")


def test_unsupported_pipeline_lists_supported_ones():
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, block_out_channels=(4, 8), norm_num_groups=4,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))  # fmt: skip
    with pytest.raises(TypeError, match="does not support DDPMPipeline; supported pipelines: FluxPipeline"):
        AcceleratedPipeline.from_pipe(DDPMPipeline(unet=unet, scheduler=DDPMScheduler()))
    with pytest.raises(TypeError, match="expected a diffusers pipeline"):
        AcceleratedPipeline.from_pipe(object())


def test_bad_methods_fail_before_any_hook(make_pipe):
    pipe = make_pipe("tiny-random-flux")
    with pytest.raises(ValueError, match="unknown method"):
        AcceleratedPipeline.from_pipe(pipe, methods="warp-speed")
    assert not hasattr(pipe.transformer, "_diffusers_hook")


def test_wrapping_twice_is_refused(make_pipe):
    pipe = make_pipe("tiny-random-flux")
    first = AcceleratedPipeline.from_pipe(pipe)
    with pytest.raises(ValueError, match="already wrapped"):
        AcceleratedPipeline.from_pipe(pipe)
    first.remove()
    AcceleratedPipeline.from_pipe(pipe)


def test_attribute_delegation(make_pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = make_pipe("tiny-random-flux")
    acc = AcceleratedPipeline.from_pipe(pipe)
    assert acc.to("cpu") is acc
    assert acc.transformer is pipe.transformer and acc.device == pipe.device
    new = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    acc.scheduler = new  # users swap schedulers on the wrapper
    assert pipe.scheduler is new
    with pytest.raises(AttributeError, match="fixed at construction"):
        acc.methods = []
    assert "transformer" in dir(acc)


def test_callbacks_still_run_and_change_nothing(make_pipe):
    name = "tiny-random-flux"
    pipe = make_pipe(name)
    plain = run(pipe, name, steps=3)
    acc = AcceleratedPipeline.from_pipe(pipe)
    steps = []

    def on_step_end(p, i, t, kwargs):
        steps.append(i)
        return kwargs

    out = run(acc, name, steps=3, callback_on_step_end=on_step_end)
    assert steps == [0, 1, 2]
    assert np.array_equal(out, plain)


def test_stats_describe_the_call(make_pipe):
    name = "tiny-random-qwen-image"
    acc = AcceleratedPipeline.from_pipe(make_pipe(name))
    acc(**example_call(name, steps=2))
    stats = acc.stats
    assert (stats.steps, stats.forwards, stats.blocks_total, stats.blocks_reused) == (2, 4, 8, 0)
    assert stats.to_dict()["steps_computed"] == 2
    text = str(stats)
    assert "QwenImagePipeline" in text and "forwards" in text


def test_the_wrapper_passes_for_the_pipeline_it_wraps():
    """Code that type-checks pipelines or filters call arguments by signature accepts the wrapper;
    a pipeline without a transformer (prompt encoding only) is refused with a clear message."""
    import inspect

    from diffusers import DiffusionPipeline, FluxPipeline

    from ditaccel.testing import tiny_pipeline

    pipe = tiny_pipeline("tiny-random-flux")
    acc = AcceleratedPipeline.from_pipe(pipe, methods="deepcache")
    assert isinstance(acc, FluxPipeline) and isinstance(acc, DiffusionPipeline)
    assert isinstance(acc, AcceleratedPipeline) and type(acc) is AcceleratedPipeline
    assert inspect.signature(acc.__call__) == inspect.signature(pipe.__call__)
    assert "num_inference_steps" in inspect.signature(acc.__call__).parameters
    encoder_only = tiny_pipeline("tiny-random-flux")
    encoder_only.transformer = None
    with pytest.raises(ValueError, match="transformer=None"):
        AcceleratedPipeline.from_pipe(encoder_only, methods=[])


@pytest.mark.parametrize(
    "spec", ["deepcache:interval=2", "sparse-attention:density=0.5,block=16,dense_steps=0"]
)
def test_a_pipeline_sharing_the_transformer_runs_plain(spec):
    """A second pipeline built from a wrapped one's components shares its transformer (and its
    hooks): its calls compute exactly what it computes alone, and the wrapper's are unchanged."""
    import numpy as np
    from conftest import run
    from diffusers import FluxPipeline

    from ditaccel.testing import tiny_pipeline

    name = "tiny-random-flux"
    pipe = tiny_pipeline(name)
    pipe.set_progress_bar_config(disable=True)
    other = FluxPipeline(**pipe.components)
    other.set_progress_bar_config(disable=True)
    other_alone = run(other, name, steps=4, seed=3)
    acc = AcceleratedPipeline.from_pipe(pipe, methods=spec)
    accelerated = run(acc, name, steps=4)
    assert np.array_equal(run(other, name, steps=4, seed=3), other_alone)
    assert np.array_equal(run(acc, name, steps=4), accelerated)
    assert acc.stats.forwards == 4  # the other pipeline's forwards were not counted as the wrapper's
