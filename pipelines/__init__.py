"""Everything that knows a diffusers pipeline, shipped as ``ditaccel.pipelines``.

- ``accelerated.py``: :class:`AcceleratedPipeline`, the wrapper users call, and model loading;
- ``base.py``: the adapter interface methods talk to (block groups, token layouts, attention
  sites, CFG batching), so that no method ever names a model class;
- one file per pipeline family (``flux.py``, ``sd3.py``, ``pixart.py``, ``qwenimage.py``,
  ``wan.py``, ``dit.py``) and ``registry.py``, which maps diffusers pipeline classes to them.

Adding a family is one adapter file here, its entry in ``registry.py``, a tiny pipeline in
``ditaccel.testing`` and a test. The wrapper is imported on first use (``from ditaccel.pipelines
import AcceleratedPipeline`` works): it depends on the methods, and the methods depend on the
adapter interface, so an eager import here would close a circle.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .base import Adapter, AttentionSite, BlockGroup, BlockIO, CFGMode, GenerationRequest, TokenLayout
from .registry import ADAPTERS, adapter_for, supported_pipelines

_LAZY = {
    "AcceleratedPipeline": "accelerated",
    "ModelNotFoundError": "accelerated",
    "load_pipeline": "accelerated",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADAPTERS",
    "AcceleratedPipeline",
    "Adapter",
    "AttentionSite",
    "BlockGroup",
    "BlockIO",
    "CFGMode",
    "GenerationRequest",
    "ModelNotFoundError",
    "TokenLayout",
    "adapter_for",
    "load_pipeline",
    "supported_pipelines",
]
