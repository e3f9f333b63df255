"""``peer-dbcache``: cache-dit's DBCache (with its TaylorSeer calibrator), when cache-dit is installed.

cache-dit is the best-known training-free cache for diffusers DiTs, so the bench runs it beside
ditaccel's caches on the same prompts, seeds and FLOPs count. It is an optional extra
(``pip install "ditaccel[peers]"``), not a dependency: without it the method is refused with the
install command. ``Fn`` / ``Bn``: first and last blocks always computed (the first ``Fn`` are the
probe), ``threshold``: cache-dit's ``residual_diff_threshold``, ``warmup``: its
``max_warmup_steps`` (steps always computed), ``max_cached`` / ``max_continuous``: its caps (-1:
none), ``taylorseer``: the calibrator's order (0: plain reuse). ditaccel adds nothing: the
pipeline goes to ``cache_dit.enable_cache`` and back with ``cache_dit.disable_cache``.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from ..hooks.context import DenoiseContext
from ..pipelines import Adapter
from .base import Method, MethodConfig
from .registry import register_method


@dataclasses.dataclass(frozen=True)
class PeerDBCacheConfig(MethodConfig):
    """cache-dit's DBCache ``Fn``/``Bn``/``threshold``/``warmup``/``max_cached``/``max_continuous``,
    and TaylorSeer of order ``taylorseer`` (0: off). Defaults are cache-dit's F8B0 at 0.08."""

    method = "peer-dbcache"
    Fn: int = 8
    Bn: int = 0
    threshold: float = 0.08
    warmup: int = 8
    max_cached: int = -1
    max_continuous: int = -1
    taylorseer: int = 1

    def __post_init__(self) -> None:
        self.check_range("Fn", 1)
        self.check_range("Bn", 0)
        self.check_range("threshold", 0.0)
        self.check_range("warmup", 0)
        self.check_range("max_cached", -1)
        self.check_range("max_continuous", -1)
        self.check_range("taylorseer", 0, 2)


_MISSING = object()


@register_method("peer-dbcache")
class PeerDBCache(Method):
    config_class = PeerDBCacheConfig
    exclusive = "step-cache"

    def __init__(self, config: PeerDBCacheConfig) -> None:
        super().__init__(config)
        self._saved: list[tuple[object, str, object]] = []

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        if importlib.util.find_spec("cache_dit") is None:
            raise ValueError(
                'peer-dbcache runs cache-dit, which is not installed: pip install "ditaccel[peers]"'
            )

    def apply(self, context: DenoiseContext) -> None:
        import cache_dit

        c = self.config
        # cache-dit patches forwards on the instances and __call__ on the pipeline's class, and its
        # disable_cache leaves the patched transformer forward behind (a second enable nests it):
        # what it may touch is saved here and put back in remove()
        pipeline = context.adapter.pipeline
        self._saved = [(type(pipeline), "__call__", type(pipeline).__dict__.get("__call__", _MISSING))]
        for denoiser in context.adapter.denoisers():
            for module in denoiser.modules():
                self._saved.append((module, "forward", module.__dict__.get("forward", _MISSING)))
        calibrator = (
            cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=c.taylorseer) if c.taylorseer else None
        )
        cache_dit.enable_cache(
            pipeline,
            cache_config=cache_dit.DBCacheConfig(
                Fn_compute_blocks=c.Fn, Bn_compute_blocks=c.Bn, residual_diff_threshold=c.threshold,
                max_warmup_steps=c.warmup, max_cached_steps=c.max_cached,
                max_continuous_cached_steps=c.max_continuous,
            ),
            calibrator_config=calibrator,
        )  # fmt: skip

    def remove(self, context: DenoiseContext) -> None:
        import cache_dit

        cache_dit.disable_cache(context.adapter.pipeline)
        for owner, name, value in self._saved:
            if value is _MISSING:
                if name in vars(owner):
                    delattr(owner, name)
            else:
                setattr(owner, name, value)
        self._saved = []
