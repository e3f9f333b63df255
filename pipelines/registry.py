"""Which adapter serves which diffusers pipeline class: one entry per family file."""

from __future__ import annotations

from typing import Any

from .base import Adapter
from .dit import DiTAdapter
from .flux import FluxAdapter
from .pixart import PixArtAdapter
from .qwenimage import QwenImageAdapter
from .sd3 import SD3Adapter
from .wan import WanAdapter

ADAPTERS: tuple[type[Adapter], ...] = (
    FluxAdapter,
    SD3Adapter,
    PixArtAdapter,
    QwenImageAdapter,
    WanAdapter,
    DiTAdapter,
)


def supported_pipelines() -> list[str]:
    """Names of the diffusers pipeline classes ditaccel can accelerate."""
    return [name for adapter in ADAPTERS for name in adapter.tasks]


def adapter_for(pipeline: Any) -> Adapter:
    """The adapter bound to ``pipeline``; TypeError naming the supported classes otherwise."""
    for klass in type(pipeline).__mro__:
        for adapter in ADAPTERS:
            if klass.__name__ in adapter.tasks:
                return adapter(pipeline)
    raise TypeError(
        f"ditaccel does not support {type(pipeline).__name__}; supported pipelines: "
        + ", ".join(supported_pipelines())
    )
