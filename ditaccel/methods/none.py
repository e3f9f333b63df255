"""``none``: the plain pipeline, the baseline every benchmark compares against."""

from __future__ import annotations

import dataclasses

from .base import Method, MethodConfig
from .registry import register_method


@dataclasses.dataclass(frozen=True)
class NoneConfig(MethodConfig):
    """No parameters: the pipeline runs unchanged."""


@register_method("none")
class NoneMethod(Method):
    config_class = NoneConfig
    context_parallel = True
