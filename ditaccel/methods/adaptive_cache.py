"""``adaptive-cache``: decide online, per step, whether the deep blocks run (first-block-cache style).

The first ``front`` blocks always run; their residual is the probe. Its relative L1 change against
the previous step (``mean|a - b| / mean|b|``, the largest over CFG halves batched together) is
accumulated since the last full compute; while the sum stays below ``threshold`` and fewer than
``max_reuse`` steps in a row were reused, the remaining blocks (but the last ``back``) are
replaced by their residual from the last full steps, optionally forecast by a Taylor series of
``order`` 1 or 2 (TaylorSeer). ``threshold=0`` never reuses, so it is exact.

The decision reads one scalar per step. On CPU that costs nothing; on an accelerator it is the one
device-to-host sync of the step (the probe itself stays on the device), as in TeaCache / FBCache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..hooks.block_range import BlockRange, InputProbe, Streams, flat_blocks
from ..hooks.context import DenoiseContext
from ..hooks.install import register_hook, remove_hook
from ..hooks.parallel import context_parallel_group, global_relative_l1
from ..hooks.step_info import StepInfo
from ..pipelines import Adapter
from .base import MethodConfig, RangeMethod
from .deepcache import deep_range
from .registry import register_method
from .taylor import TaylorSeries


@dataclasses.dataclass(frozen=True)
class AdaptiveCacheConfig(MethodConfig):
    """``threshold``: accumulated relative L1 change of the probe below which the deep blocks are
    reused (0: exact). ``ramp``: the threshold grows linearly over the schedule to ``1 + ramp``
    times its start (late steps tolerate more: calibration measured an error at the end of the
    schedule costing ~50x less image MSE than at the start). ``front``: probe blocks, always run
    (>= 1). ``back``: last blocks always run. ``max_reuse``: most steps in a row served from the
    cache. ``order``: Taylor forecast order of the reused residual (0: plain reuse). ``warmup`` /
    ``final``: steps always computed. Defaults (order 2, ramp 3, max_reuse 5) were chosen on
    shapes-flux, t2i, 28 steps (``benchmarks/caches_v2.sh``): at threshold 0.1 they give FLOPs x0.50
    at 44.8 dB where the earlier defaults (order 0, no ramp, max_reuse 3) needed threshold 0.2 for
    x0.52 at 35.0 dB."""

    method = "adaptive-cache"
    threshold: float = 0.1
    front: int = 1
    back: int = 0
    max_reuse: int = 5
    order: int = 2
    warmup: int = 1
    final: int = 1
    ramp: float = 3.0

    def __post_init__(self) -> None:
        self.check_range("ramp", 0.0)
        self.check_range("threshold", 0.0)
        self.check_range("front", 1)
        self.check_range("back", 0)
        self.check_range("max_reuse", 1)
        self.check_range("order", 0, 2)
        self.check_range("warmup", 1)
        self.check_range("final", 0)


@dataclass
class _State:
    probe: torch.Tensor | None = None  # previous step's probe residual
    accumulated: torch.Tensor | float = 0.0
    reuses: int = 0
    hidden: TaylorSeries | None = None
    encoder: TaylorSeries | None = None


def relative_l1(current: torch.Tensor, previous: torch.Tensor, halves: int = 1) -> torch.Tensor:
    """``mean|current - previous| / mean|previous|``, the largest over ``halves`` batch chunks."""
    changes = [
        (a - b).abs().mean() / b.abs().mean().clamp_min(torch.finfo(b.dtype).tiny)
        for a, b in zip(current.chunk(halves), previous.chunk(halves), strict=True)
    ]
    return torch.stack(changes).max()


def _change(
    context: DenoiseContext, info: StepInfo, current: torch.Tensor, previous: torch.Tensor, halves: int
):
    """The probe's relative change; under context parallelism, of the whole sequence (all ranks)."""
    group = context_parallel_group(context.adapter.denoisers()[info.denoiser])
    if group is None:
        return relative_l1(current, previous, halves)
    return global_relative_l1(current, previous, halves, group)


class _AdaptivePolicy:
    def __init__(self, context: DenoiseContext, config: AdaptiveCacheConfig, key: str) -> None:
        self.context = context
        self.config = config
        self.key = key
        self.probe_key = f"{key}.probe"

    def _state(self) -> _State:
        order = self.config.order
        return self.context.state(
            self.key, lambda: _State(hidden=TaylorSeries(order), encoder=TaylorSeries(order)), by_rows=True
        )

    def enter(self, info: StepInfo, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Streams | None:
        c, state = self.config, self._state()
        probe = hidden - self.context.state(self.probe_key, dict, by_rows=True)["hidden"]
        previous, state.probe = state.probe, probe
        forced = info.step < c.warmup or info.step >= info.total - c.final
        if forced or previous is None or not state.hidden.ready or state.reuses >= c.max_reuse:
            return self._compute(state)
        halves = max(1, len(self.context.cfg.batched))
        state.accumulated = state.accumulated + _change(self.context, info, probe, previous, halves)
        threshold = c.threshold * (1.0 + c.ramp * info.step / max(info.total - 1, 1))
        if not float(state.accumulated) < threshold:  # the step's one scalar read
            return self._compute(state)
        state.reuses += 1
        residual = state.hidden.forecast(info.step)
        new_encoder = encoder
        if encoder is not None and state.encoder.ready:
            new_encoder = encoder + state.encoder.forecast(info.step)
        return hidden + residual, new_encoder

    @staticmethod
    def _compute(state: _State) -> None:
        state.accumulated, state.reuses = 0.0, 0
        return None

    def computed(self, info: StepInfo, hidden: torch.Tensor | None, encoder: torch.Tensor | None) -> None:
        state = self._state()
        state.hidden.update(hidden, info.step)
        if encoder is not None:
            state.encoder.update(encoder, info.step)


_KEY = "adaptive-cache"
_PROBE_HOOK = f"ditaccel.{_KEY}.probe"


@register_method("adaptive-cache")
class AdaptiveCache(RangeMethod):
    config_class = AdaptiveCacheConfig
    context_parallel = True
    exclusive = "step-cache"

    def __init__(self, config: AdaptiveCacheConfig) -> None:
        super().__init__(config)
        self._probes: list[torch.nn.Module] = []

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        for denoiser in adapter.denoisers():
            deep_range(adapter, denoiser, self.config.front, self.config.back, self.config.method)

    def apply(self, context: DenoiseContext) -> None:
        c, key = self.config, _KEY
        for index, denoiser in enumerate(context.adapter.denoisers()):
            first = flat_blocks(context.adapter, denoiser)[0]
            register_hook(first.module, InputProbe(context, index, first.io, f"{key}.probe"), _PROBE_HOOK)
            self._probes.append(first.module)
            policy = _AdaptivePolicy(context, c, key)
            block_range = BlockRange(context, index, deep_range(context.adapter, denoiser, c.front, c.back, c.method),
                                     policy, key)  # fmt: skip
            self.attach_range(block_range)

    def remove(self, context: DenoiseContext) -> None:
        super().remove(context)
        for module in self._probes:
            remove_hook(module, _PROBE_HOOK)
        self._probes.clear()
