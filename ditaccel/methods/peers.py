"""diffusers' own cache hooks as bench methods, so users compare against them in one run.

``peer-fbcache`` (:class:`diffusers.FirstBlockCacheConfig`), ``peer-taylorseer``
(:class:`diffusers.TaylorSeerCacheConfig`) and ``peer-magcache`` (:class:`diffusers.MagCacheConfig`,
with the magnitude ratios ``ditaccel calibrate`` measured on the model, as MagCache's own
calibration mode would) are applied with the transformer's own ``enable_cache`` and taken off with ``disable_cache``;
ditaccel adds nothing to them. They need a transformer with diffusers' cache mixin and a pipeline
that names its CFG branches with ``cache_context`` (FLUX, Qwen-Image, Wan); elsewhere ``check``
refuses them. Their parameters keep diffusers' names and defaults.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from diffusers import FirstBlockCacheConfig, MagCacheConfig, TaylorSeerCacheConfig
from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

from ..calibration.profile import Profile, shipped_profile
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
    """diffusers' MagCache. ``ratios``: the per-step magnitude ratios it gates on: ``profile``, those
    ``ditaccel calibrate`` measured on this model (``profile=P``, default: the profile shipped with
    the model), ``flux-dev``, the ones diffusers ships (measured on FLUX.1-dev; an approximation for
    other checkpoints), or ``auto``: the profile's where the model has one with ratios, else
    FLUX.1-dev's on FLUX models. ``num_inference_steps`` must match the call's step count (diffusers
    stretches the ratios to it)."""

    method = "peer-magcache"
    threshold: float = 0.06
    max_skip_steps: int = 3
    retention_ratio: float = 0.2
    num_inference_steps: int = 28
    ratios: Literal["auto", "profile", "flux-dev"] = "auto"
    profile: Path | None = None

    def __post_init__(self) -> None:
        self.check_range("threshold", 0.0)
        self.check_range("max_skip_steps", 1)
        self.check_range("retention_ratio", 0.0, 1.0)
        self.check_range("num_inference_steps", 2)
        if self.ratios not in ("auto", "profile", "flux-dev"):
            raise ValueError(f"{self.method}: ratios must be auto, profile or flux-dev, got {self.ratios!r}")
        if self.profile is not None and not Path(self.profile).is_file():
            raise ValueError(f"{self.method}: profile {self.profile} does not exist")


@register_method("peer-magcache")
class PeerMagCache(_Peer):
    config_class = PeerMagCacheConfig

    def __init__(self, config: PeerMagCacheConfig) -> None:
        super().__init__(config)
        self.mag_ratios: list[float] | None = None

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        c = self.config
        path = c.profile or shipped_profile(adapter.pipeline)
        ratios = Profile.load(path).mag_ratios if path is not None and c.ratios != "flux-dev" else []
        if ratios:
            self.mag_ratios = list(ratios)
        elif c.ratios == "profile":
            where = f"{path} has none" if path is not None else "the model ships no profile"
            raise ValueError(
                f"peer-magcache: ratios=profile needs magnitude ratios from `ditaccel calibrate` ({where}); "
                "re-run it, or pass ratios=flux-dev"
            )
        elif adapter.family == "flux":
            self.mag_ratios = FLUX_MAG_RATIOS.tolist()
        else:
            raise ValueError(
                f"peer-magcache: diffusers ships magnitude ratios for FLUX.1 only; calibrate this "
                f"{adapter.family} model (`ditaccel calibrate`) and pass profile=P"
            )

    def diffusers_config(self) -> MagCacheConfig:
        c = self.config
        return MagCacheConfig(
            threshold=c.threshold,
            max_skip_steps=c.max_skip_steps,
            retention_ratio=c.retention_ratio,
            num_inference_steps=c.num_inference_steps,
            mag_ratios=torch.tensor(self.mag_ratios),
        )
