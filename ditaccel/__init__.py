"""ditaccel: training-free acceleration for diffusers Diffusion Transformer pipelines."""

from . import quiet as _quiet  # noqa: F401  (first: drops one transformers message before diffusers loads)
from .methods import MethodConfig, available_methods, parse_spec, register_method
from .pipelines import GenerationRequest, adapter_for, supported_pipelines
from .pipelines.accelerated import AcceleratedPipeline, ModelNotFoundError, load_pipeline

__version__ = "0.1.0"


def tune(pipe, inputs, **kwargs):
    """The best method setting for ``pipe`` on ``inputs``, measured on its device: see
    :func:`ditaccel.tuning.run.tune` (imported on first use: it brings matplotlib)."""
    from .tuning import tune as _tune

    return _tune(pipe, inputs, **kwargs)


__all__ = [
    "AcceleratedPipeline",
    "GenerationRequest",
    "MethodConfig",
    "ModelNotFoundError",
    "adapter_for",
    "available_methods",
    "load_pipeline",
    "parse_spec",
    "register_method",
    "supported_pipelines",
    "tune",
]
