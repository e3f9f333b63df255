"""``calibrated-cache``: run the per-step, per-block cache plan of a calibration profile.

The plan (:mod:`ditaccel.calibration.planner`) names, for every step, the blocks served from the
cache; each such block passes its input plus its residual forecast from its last computed steps
(Taylor order 0 or 1, as planned) and every other block runs. The plan is made from the profile
for the requested ``flops_ratio`` (or error ``budget``) at the profile's step count and mapped onto
the call's (:meth:`CachePlan.for_steps`); a profile without its reuse-error tensors serves its stored
plan nearest the target. Blocks the plan never serves keep no cache. Without ``profile`` the profile
shipped in the model's folder is used. ``flops_ratio=1`` plans nothing and is exact.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ..calibration.error_model import call_sigmas
from ..calibration.planner import (
    CachePlan,
    PlannerConfig,
    meets_target,
    nearest_plan,
    plan_cache,
    stored_plan,
)
from ..calibration.profile import Profile, fingerprint, shipped_profile
from ..hooks.block_range import BlockRange, Streams, flat_blocks
from ..hooks.context import DenoiseContext
from ..hooks.step_info import StepInfo
from ..pipelines import Adapter
from .base import MethodConfig, RangeMethod
from .registry import register_method
from .taylor import TaylorSeries

_KEY = "calibrated-cache"
# taken from the verified plan nearest the target (weighting and power unless the call names one)
_GENERATOR_FIELDS = ("scope", "protect", "front", "max_gap", "weighting", "power", "ramp")


@dataclasses.dataclass(frozen=True)
class CalibratedCacheConfig(MethodConfig):
    """``profile``: a calibration profile (default: the one shipped with the model). ``flops_ratio``:
    target share of the plain transformer FLOPs (1: nothing cached, exact). ``budget``: largest
    predicted error instead (or as well). ``order``: forecast of served residuals (0 reuse, 1
    linear; default: the order of the verified plan nearest the call).
    ``weighting``: how the planner weighs steps (default: as the verified plan nearest the target
    was made): ``measured`` by the profile's step sensitivity (what a step's error does to the
    image), ``uniform``, or ``dt`` (by the step's share of the noise schedule)."""

    method = "calibrated-cache"
    profile: Path | None = None
    flops_ratio: float = 0.5
    budget: float | None = None
    order: int | None = None
    weighting: Literal["uniform", "dt", "measured"] | None = None

    def __post_init__(self) -> None:
        self.check_range("flops_ratio", 0.0, 1.0)
        if self.flops_ratio <= 0:
            raise ValueError(f"{self.method}: flops_ratio must be in (0, 1], got {self.flops_ratio}")
        if self.budget is not None:
            self.check_range("budget", 0.0)
        if self.order is not None:
            self.check_range("order", 0, 1)
        if self.weighting not in (None, "uniform", "dt", "measured"):
            raise ValueError(
                f"{self.method}: weighting must be uniform, dt or measured, got {self.weighting!r}"
            )
        if self.profile is not None and not Path(self.profile).is_file():
            raise ValueError(f"{self.method}: profile {self.profile} does not exist")

    def planner(self, order: int) -> PlannerConfig:
        """The planner settings of this call's target, for plans of forecast ``order``."""
        target = None if self.budget is not None and self.flops_ratio >= 1 else self.flops_ratio
        return PlannerConfig(
            flops_ratio=target, budget=self.budget, order=order, weighting=self.weighting or "uniform"
        )


@dataclass
class _CallPlan:
    """The plan of the current call and the blocks it ever serves (resolved once per call)."""

    plan: CachePlan
    served: set[int]


@dataclass
class _BlockCache:
    hidden: TaylorSeries
    encoder: TaylorSeries
    has_encoder: bool = False


class _BlockPolicy:
    """One block: serve it when the plan says so and a forecast exists, else run it and record."""

    def __init__(self, method: CalibratedCache, context: DenoiseContext, index: int) -> None:
        self.method, self.context, self.index = method, context, index
        self.key = f"{_KEY}.{index}"

    def _cache(self) -> _BlockCache:
        order = self._call_plan(self.context.current).plan.order
        return self.context.state(
            self.key, lambda: _BlockCache(TaylorSeries(order), TaylorSeries(order)), by_rows=True
        )

    def _call_plan(self, info: StepInfo) -> _CallPlan:
        def resolve() -> _CallPlan:
            plan = self.method.plan(info.total, call_sigmas(self.context.adapter.pipeline.scheduler))
            return _CallPlan(plan, plan.blocks())

        return self.context.state(f"{_KEY}.plan", resolve, shared=True)

    def enter(self, info: StepInfo, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Streams | None:
        if self.index not in self._call_plan(info).plan.reuse[info.step]:
            return None
        cache = self._cache()
        if not cache.hidden.ready:
            return None
        new_encoder = encoder
        if encoder is not None and cache.has_encoder:
            new_encoder = encoder + cache.encoder.forecast(info.step)
        return hidden + cache.hidden.forecast(info.step), new_encoder

    def computed(self, info: StepInfo, hidden: torch.Tensor | None, encoder: torch.Tensor | None) -> None:
        if self.index not in self._call_plan(info).served:
            return  # never served in this plan: nothing to keep
        cache = self._cache()
        cache.hidden.update(hidden, info.step)
        cache.has_encoder = encoder is not None
        if encoder is not None:
            cache.encoder.update(encoder, info.step)


@register_method("calibrated-cache")
class CalibratedCache(RangeMethod):
    config_class = CalibratedCacheConfig
    context_parallel = True
    exclusive = "step-cache"

    def __init__(self, config: CalibratedCacheConfig) -> None:
        super().__init__(config)
        self.profile: Profile | None = None
        self._plans: dict[tuple, CachePlan] = {}  # by step count and sigmas, made once each

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        path = self.config.profile or shipped_profile(adapter.pipeline)
        if path is None:
            raise ValueError(
                "calibrated-cache needs a calibration profile: pass profile=PATH (made with "
                "`ditaccel calibrate`); this model ships none"
            )
        profile = Profile.load(path)
        for denoiser in adapter.denoisers():
            blocks = [b.name for b in flat_blocks(adapter, denoiser)]
            profile.check_model(blocks, fingerprint(denoiser.config))
        pipeline = type(adapter.pipeline).__name__
        if profile.pipeline != pipeline:
            warnings.warn(
                f"calibrated-cache: the profile was made with {profile.pipeline}, this is {pipeline}; "
                "its redundancy may differ (reference tokens, other inputs): calibrate this pipeline",
                stacklevel=2,
            )
        if not profile.has_errors:
            if self.config.budget is not None:
                raise ValueError(
                    "calibrated-cache: an error budget needs the profile's reuse-error tensors "
                    f"({path} has no .safetensors beside it); give flops_ratio to use a stored plan"
                )
            stored_plan(profile, self.config.flops_ratio, self.config.order)  # fails early when none fits
        self.profile = profile

    def plan(self, steps: int, sigmas: list[float] | None = None) -> CachePlan:
        """The plan this method runs for a call of ``steps`` steps at noise levels ``sigmas``."""
        key = (steps, tuple(round(x, 4) for x in sigmas or ()))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._make_plan(steps, sigmas)
        return plan

    def _make_plan(self, steps: int, sigmas: list[float] | None) -> CachePlan:
        profile, c = self.profile, self.config
        if c.flops_ratio >= 1 and c.budget is None:
            return CachePlan(steps, c.order or 0, [[] for _ in range(steps)], 1.0, 0.0, {"flops_ratio": 1.0})
        stored = [CachePlan.from_dict(p) for p in profile.plans.get(_KEY, [])]
        stored = [p for p in stored if c.order is None or p.order == c.order]
        if c.budget is None:  # a plan `calibrate` verified for exactly this call
            for p in stored:
                same_weighting = c.weighting in (None, p.generator.get("weighting", "uniform"))
                if p.steps == steps and p.target.get("flops_ratio") == c.flops_ratio and same_weighting:
                    return p
        if not profile.has_errors:
            return stored_plan(profile, c.flops_ratio, c.order, steps).for_steps(steps)
        # the kind of plan calibrate measured best nearest this call (its step count, then its
        # target), made on this call's grid
        nearest = nearest_plan(stored, steps, c.flops_ratio)
        kind = {k: v for k, v in (nearest.generator if nearest else {}).items() if k in _GENERATOR_FIELDS}
        unmeasured = kind.get("weighting") == "measured" and not profile.step_sensitivity
        if c.weighting is not None or unmeasured:  # the call's own (or the default) weighting instead
            kind = {k: v for k, v in kind.items() if k not in ("weighting", "power")}
        order = c.order if c.order is not None else (nearest.order if nearest else 1)
        config = dataclasses.replace(c.planner(order), **kind)
        plan = plan_cache(profile, config, steps, sigmas)
        if c.budget is None and not meets_target(plan, c.flops_ratio):
            raise ValueError(
                f"calibrated-cache: with a profile of {profile.steps} steps, a {steps}-step call cannot be "
                f"planned down to flops_ratio={c.flops_ratio} with measured reuse errors (it reaches "
                f"{plan.flops_ratio:.2f}); use a higher flops_ratio or calibrate at {steps} steps "
                f"(`ditaccel calibrate --steps {steps}`)"
            )
        return plan

    def apply(self, context: DenoiseContext) -> None:
        if self.profile is None:
            self.check(context.adapter)
        if self.config.flops_ratio >= 1 and self.config.budget is None:
            return  # nothing is ever served: no hook at all
        for index, denoiser in enumerate(context.adapter.denoisers()):
            for b, block in enumerate(flat_blocks(context.adapter, denoiser)):
                policy = _BlockPolicy(self, context, b)
                self.attach_range(BlockRange(context, index, [block], policy, f"{_KEY}.{b}"))
