"""diffusers' own cache hooks as bench methods, so users compare against them in one run.

``peer-fbcache`` (:class:`diffusers.FirstBlockCacheConfig`), ``peer-taylorseer``
(:class:`diffusers.TaylorSeerCacheConfig`) and ``peer-magcache`` (:class:`diffusers.MagCacheConfig`)
are applied with the transformer's own ``enable_cache`` and taken off with ``disable_cache``;
ditaccel adds nothing to them. They need a transformer with diffusers' cache mixin and a pipeline
that names its CFG branches with ``cache_context`` (FLUX, Qwen-Image, Wan); elsewhere ``check``
refuses them. Their parameters keep diffusers' names and defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, ClassVar, Literal

import torch
from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

from ..hooks.context import DenoiseContext
from ..pipelines import Adapter
from .base import Method, MethodConfig
from .registry import register_method


class _Peer(Method):
    """Apply one diffusers cache config to every denoiser."""

    exclusive = "step-cache"
    families: ClassVar[frozenset[str] | None] = None

    def diffusers_config(self) -> Any:
        raise NotImplementedError

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        name, pipeline = self.config.method, adapter.pipeline
        if self.families is not None and adapter.family not in self.families:
            raise ValueError(
                f"{name} is only defined for {sorted(self.families)} models, not {adapter.family}"
            )
        for denoiser in adapter.denoisers():
            if not hasattr(denoiser, "enable_cache"):
                raise ValueError(f"{name}: {type(denoiser).__name__} has no diffusers cache support")
        if "cache_context" not in inspect.getsource(type(pipeline).__call__):
            raise ValueError(
                f"{name}: {type(pipeline).__name__} does not set a cache_context, which diffusers' "
                "cache hooks need"
            )

    def apply(self, context: DenoiseContext) -> None:
        for denoiser in context.adapter.denoisers():
            denoiser.enable_cache(self.diffusers_config())

    def remove(self, context: DenoiseContext) -> None:
        for denoiser in context.adapter.denoisers():
            if getattr(denoiser, "is_cache_enabled", False):
                denoiser.disable_cache()


@dataclasses.dataclass(frozen=True)
class PeerFBCacheConfig(MethodConfig):
    """diffusers' First Block Cache: ``threshold`` on the first block's residual change."""

    method = "peer-fbcache"
    threshold: float = 0.05

    def __post_init__(self) -> None:
        self.check_range("threshold", 0.0)


@register_method("peer-fbcache")
class PeerFBCache(_Peer):
    config_class = PeerFBCacheConfig

    def diffusers_config(self) -> FirstBlockCacheConfig:
        return FirstBlockCacheConfig(threshold=self.config.threshold)


@dataclasses.dataclass(frozen=True)
class PeerTaylorSeerConfig(MethodConfig):
    """diffusers' TaylorSeer cache: full pass every ``cache_interval`` steps, Taylor forecasts of
    order up to ``max_order`` in between, none before ``disable_cache_before_step``."""

    method = "peer-taylorseer"
    cache_interval: int = 5
    disable_cache_before_step: int = 3
    disable_cache_after_step: int | None = None
    max_order: int = 1
    factors_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    use_lite_mode: bool = False

    def __post_init__(self) -> None:
        self.check_range("cache_interval", 1)
        self.check_range("disable_cache_before_step", 0)
        self.check_range("max_order", 0)


@register_method("peer-taylorseer")
class PeerTaylorSeer(_Peer):
    config_class = PeerTaylorSeerConfig

    def diffusers_config(self) -> TaylorSeerCacheConfig:
        c = self.config
        return TaylorSeerCacheConfig(
            cache_interval=c.cache_interval,
            disable_cache_before_step=c.disable_cache_before_step,
            disable_cache_after_step=c.disable_cache_after_step,
            max_order=c.max_order,
            taylor_factors_dtype=getattr(torch, c.factors_dtype),
            use_lite_mode=c.use_lite_mode,
        )


@dataclasses.dataclass(frozen=True)
class PeerMagCacheConfig(MethodConfig):
    """diffusers' MagCache with the magnitude ratios it ships for FLUX.1 (the only ones it has;
    they were measured on FLUX.1-dev, so on other FLUX checkpoints they are an approximation).
    ``num_inference_steps`` must match the call's step count."""

    method = "peer-magcache"
    threshold: float = 0.06
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    num_inference_steps: int = 28

    def __post_init__(self) -> None:
        self.check_range("threshold", 0.0)
        self.check_range("max_skip_steps", 1)
        self.check_range("retention_ratio", 0.0, 1.0)
        self.check_range("num_inference_steps", 2)


@register_method("peer-magcache")
class PeerMagCache(_Peer):
    config_class = PeerMagCacheConfig
    families = frozenset({"flux"})

    def diffusers_config(self) -> MagCacheConfig:
        c = self.config
        return MagCacheConfig(
            threshold=c.threshold,
            max_skip_steps=c.max_skip_steps,
            retention_ratio=c.retention_ratio,
            num_inference_steps=c.num_inference_steps,
            mag_ratios=FLUX_MAG_RATIOS,
        )
