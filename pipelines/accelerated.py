"""``AcceleratedPipeline``: a diffusers pipeline with acceleration methods hooked in.

It swaps in for ``DiffusionPipeline``: same call, same output; every attribute it does not own
is read from and written to the wrapped pipeline, so ``.to()``, offloading, schedulers,
callbacks and LoRA keep working. Hooks are registered on this pipeline's own module instances,
never on classes, and ``remove()`` takes them all off again.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import models
from ..hooks import step_tracker
from ..hooks.context import DenoiseContext
from ..hooks.parallel import check_context_parallel
from ..methods import Method, MethodConfig, method_class, resolve_methods
from ..stats import CallStats
from .registry import adapter_for

MethodsArg = str | MethodConfig | Iterable[str | MethodConfig] | None


class ModelNotFoundError(OSError):
    """A model name that is neither embedded, nor a local folder, nor reachable on the hub."""


class AcceleratedPipeline:
    """A diffusers DiT pipeline accelerated by ``methods`` (names, spec strings or configs)."""

    _OWN = frozenset({"pipeline", "adapter", "methods", "context", "_method_objects", "__call__"})

    def __init__(self, pipeline: Any, methods: MethodsArg = None) -> None:
        if not hasattr(pipeline, "components") or not callable(pipeline):
            raise TypeError(f"expected a diffusers pipeline, got {type(pipeline).__name__}")
        adapter = adapter_for(pipeline)
        if getattr(pipeline, "transformer", None) is None:
            raise ValueError(
                f"this {type(pipeline).__name__} was built with transformer=None (e.g. to encode prompts "
                "only): there is no denoiser to accelerate; call it unwrapped"
            )
        step_tracker.ensure_unwrapped(adapter.denoisers())
        configs = resolve_methods(methods)
        method_objects: list[Method] = [method_class(c.method)(c) for c in configs]
        for method in method_objects:
            method.check(adapter)
            method.check_combination(configs)
        context = DenoiseContext(pipeline, adapter)
        context.method_specs = [c.spec() for c in configs]
        object.__setattr__(self, "pipeline", pipeline)
        object.__setattr__(self, "adapter", adapter)
        object.__setattr__(self, "methods", tuple(configs))
        object.__setattr__(self, "context", context)
        object.__setattr__(self, "_method_objects", method_objects)
        # inspect.signature(pipe.__call__) shows the wrapped pipeline's parameters (code that
        # filters call arguments by signature works); calling still goes through the class's
        # __call__ (an instance attribute does not change what pipe(...) runs)
        call = functools.partial(AcceleratedPipeline._call, self)
        call.__signature__ = inspect.signature(pipeline.__call__)  # the bound signature: no self
        object.__setattr__(self, "__call__", call)
        applied: list[Method] = []
        try:
            # inner methods first: their hooks then sit inside the others' (see Method.inner)
            for method in sorted(method_objects, key=lambda m: not m.inner):
                method.apply(context)
                applied.append(method)
            step_tracker.attach(context)
        except Exception:
            for method in reversed(applied):
                method.remove(context)
            raise

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_pipe(cls, pipeline: Any, methods: MethodsArg = None) -> AcceleratedPipeline:
        """Accelerate an existing diffusers pipeline in place (its modules get the hooks)."""
        return cls(pipeline, methods)

    @classmethod
    def from_pretrained(
        cls, model: str | os.PathLike, methods: MethodsArg = None, pipeline_class: Any = None, **kwargs: Any
    ) -> AcceleratedPipeline:
        """Load ``model`` (embedded name, local folder or hub id) and accelerate it.

        ``pipeline_class`` picks the diffusers class (or its name) for a folder that several
        pipelines can load; other keyword arguments go to diffusers' ``from_pretrained``.
        """
        return cls(load_pipeline(model, pipeline_class=pipeline_class, **kwargs), methods)

    # --- identity ----------------------------------------------------------------------------------
    @property
    def __class__(self):  # noqa: D105 - isinstance(pipe, FluxPipeline / DiffusionPipeline) holds
        """The wrapped pipeline's class, so libraries that type-check pipelines accept the wrapper
        (``type(pipe)`` is still ``AcceleratedPipeline``)."""
        return type(self.pipeline)

    # --- calling ---------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._call(*args, **kwargs)

    def _call(self, *args: Any, **kwargs: Any) -> Any:
        accepted = set(inspect.signature(self.pipeline.__call__).parameters)
        arguments = {}
        for method in self._method_objects:
            for name in method.call_arguments & set(kwargs):
                arguments[name] = kwargs[name] if name in accepted else kwargs.pop(name)
        for method in self._method_objects:
            method.prepare_call(self.context, arguments, kwargs)
        check_context_parallel(self._method_objects, self.adapter.denoisers())
        self.context.begin_call(kwargs)
        self.context.call_arguments = arguments
        start = time.perf_counter()
        try:
            output = self.pipeline(*args, **kwargs)
        finally:
            self.context.end_call()
        self.context.stats.wall_s = time.perf_counter() - start
        return output

    def method(self, name: str) -> Method:
        """The attached method called ``name``, e.g. to read what the last call chose
        (``pipe.method("region-edit").edited_mask``)."""
        for method in self._method_objects:
            if method.config.method == name:
                return method
        raise KeyError(f"no method {name!r} on this pipeline (it has {[c.method for c in self.methods]})")

    @property
    def call_arguments(self) -> frozenset[str]:
        """Call keyword arguments the methods read beyond the pipeline's own (e.g. ``mask_image``)."""
        return frozenset().union(*(m.call_arguments for m in self._method_objects))

    @property
    def stats(self) -> CallStats:
        """What the last call did (steps, forwards, blocks reused, ...), also when the wrapped
        pipeline was called directly."""
        return self.context.stats

    # --- lifecycle -------------------------------------------------------------------------------
    def remove(self) -> Any:
        """Take every hook off and return the plain diffusers pipeline."""
        step_tracker.detach(self.context)
        for method in reversed(self._method_objects):
            method.remove(self.context)
        return self.pipeline

    def to(self, *args: Any, **kwargs: Any) -> AcceleratedPipeline:
        self.pipeline.to(*args, **kwargs)
        return self

    # --- delegation --------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name in AcceleratedPipeline._OWN:
            raise AttributeError(name)
        return getattr(self.pipeline, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            raise AttributeError(f"{name} is fixed at construction; build a new AcceleratedPipeline")
        setattr(self.pipeline, name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(self.pipeline)))

    def __repr__(self) -> str:
        specs = " + ".join(c.spec() for c in self.methods) or "none"
        return f"AcceleratedPipeline({type(self.pipeline).__name__}, methods=[{specs}])"


def load_pipeline(model: str | os.PathLike, pipeline_class: Any = None, **kwargs: Any) -> Any:
    """A plain diffusers pipeline for an embedded name, a local folder or a hub id."""
    from diffusers import DiffusionPipeline

    klass = _pipeline_class(pipeline_class) or DiffusionPipeline
    name = str(model)
    if name in models.MODELS:
        entry = models.get(name)
        wanted = klass.__name__ if pipeline_class is not None else entry.pipeline_for()
        if wanted not in entry.pipelines.values():
            raise ValueError(f"{name} loads as {', '.join(entry.pipelines.values())}, not {wanted}")
        if entry.build is not None:
            return entry.build(**kwargs)
        if not (entry.folder / "model_index.json").is_file():
            raise ModelNotFoundError(
                f"{name}'s weights are missing from {entry.folder}; train them with "
                "`python -m ditaccel.models.train_shapes_flux`"
            )
        return _pipeline_class(wanted).from_pretrained(entry.folder, **{"local_files_only": True, **kwargs})
    if Path(name).is_dir():
        return klass.from_pretrained(name, **{"local_files_only": True, **kwargs})
    embedded = ", ".join(models.available())
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        raise ModelNotFoundError(
            f"{name!r} is not an embedded model or a local folder, and HF_HUB_OFFLINE is set; "
            f"embedded models: {embedded}"
        )
    try:
        return klass.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"could not load {name!r} (not embedded, not a local folder, not reachable on the hub: {exc}); "
            f"embedded models: {embedded}"
        ) from exc


def _pipeline_class(pipeline_class: Any) -> Any:
    if pipeline_class is None or isinstance(pipeline_class, type):
        return pipeline_class
    import diffusers

    klass = getattr(diffusers, str(pipeline_class), None)
    if klass is None:
        raise ValueError(f"diffusers has no pipeline class {pipeline_class!r}")
    return klass
