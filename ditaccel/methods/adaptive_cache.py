"""``adaptive-cache``: decide online, per step, whether the transformer blocks run.

Two ways to decide, both from what the call itself shows (no profile):

- ``decide=rate`` (default): nothing extra runs. Every computed step measures how fast the cached
  residual (output minus input of the cached blocks) moves: its relative L1 change against the
  previous computed step's, per step. The next steps are served while that rate times the steps
  since the last compute stays below ``threshold``, so a served step runs no block at all
  (MagCache's skip, with the drift measured on the fly instead of calibrated ratios).
- ``decide=probe`` (first-block-cache style): the first ``front`` blocks always run; their
  residual's relative L1 change against the previous step is accumulated since the last full
  compute, and the remaining blocks are served while the sum stays below ``threshold``.

Served residuals are the last computed ones, optionally forecast by a Taylor series of ``order``
1 or 2 (TaylorSeer); at most ``max_reuse`` steps in a row are served. ``threshold=0`` never
serves, so it is exact.

The decision reads one scalar per step (``probe``) or per computed step (``rate``). On CPU that
costs nothing; on an accelerator it is a device-to-host sync, as in TeaCache / FBCache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

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
    """``threshold``: predicted (``rate``) or accumulated (``probe``) relative L1 change of the
    cached blocks' residual below which they are served (0: exact). ``decide``: ``rate`` (no
    block runs on a served step) or ``probe`` (the first ``front`` blocks always run and decide).
    ``ramp``: the threshold grows linearly over the schedule to ``1 + ramp`` times its start
    (calibration measured an error in the last third of the schedule costing ~85x less image MSE
    than in the first). ``front``: blocks always run (default 0 for ``rate``, 1 for ``probe``,
    which needs >= 1). ``back``: last blocks always run. ``max_reuse``: most steps in a row served.
    ``order``: Taylor forecast order of the served residual (0: plain reuse). ``warmup`` /
    ``final``: steps always computed. Defaults (rate, order 1, ramp 3, max_reuse 3, no forced final
    step) chosen on shapes-flux t2i at 14 and 28 steps on the calibration prompts: at 28 steps,
    threshold 0.1 gives FLOPs x0.40 at 41.0 dB where calibrated MagCache gives x0.395 at 35.4 dB
    (``benchmarks/caches_v2.sh`` has the bench prompts and held-out ones)."""

    method = "adaptive-cache"
    threshold: float = 0.1
    decide: Literal["rate", "probe"] = "rate"
    front: int | None = None
    back: int = 0
    max_reuse: int = 3
    order: int = 1
    warmup: int = 1
    final: int = 0
    ramp: float = 3.0

    def __post_init__(self) -> None:
        if self.decide not in ("rate", "probe"):
            raise ValueError(f"{self.method}: decide must be rate or probe, got {self.decide!r}")
        self.check_range("ramp", 0.0)
        self.check_range("threshold", 0.0)
        if self.front is not None:
            self.check_range("front", 1 if self.decide == "probe" else 0)
        self.check_range("back", 0)
        self.check_range("max_reuse", 1)
        self.check_range("order", 0, 2)
        self.check_range("warmup", 1)
        self.check_range("final", 0)

    @property
    def front_blocks(self) -> int:
        """Blocks always run before the cached range."""
        if self.front is not None:
            return self.front
        return 1 if self.decide == "probe" else 0

    def threshold_at(self, info: StepInfo) -> float:
        """The threshold at ``info``'s step (ramped over the schedule)."""
        return self.threshold * (1.0 + self.ramp * info.step / max(info.total - 1, 1))

    def forced(self, info: StepInfo) -> bool:
        """Whether ``info``'s step is always computed (warm-up and final steps)."""
        return info.step < self.warmup or info.step >= info.total - self.final


@dataclass
class _State:
    probe: torch.Tensor | None = None  # previous step's probe residual (decide=probe)
    accumulated: torch.Tensor | float = 0.0  # probe change since the last compute (decide=probe)
    rate: float | None = None  # residual change per step at the last compute (decide=rate)
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
    """Serve the range when the step's change measure stays below the threshold (see the module)."""

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

    def _halves(self) -> int:
        return max(1, len(self.context.cfg.batched))

    def enter(self, info: StepInfo, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Streams | None:
        c, state = self.config, self._state()
        if c.decide == "probe":
            probe = hidden - self.context.state(self.probe_key, dict, by_rows=True)["hidden"]
            previous, state.probe = state.probe, probe
        if c.forced(info) or not state.hidden.ready or state.reuses >= c.max_reuse:
            return self._compute(state)
        if c.decide == "probe":
            if previous is None:
                return self._compute(state)
            change = _change(self.context, info, probe, previous, self._halves())
            state.accumulated = state.accumulated + change
            serve = float(state.accumulated) < c.threshold_at(info)  # the step's one scalar read
        else:
            since = info.step - state.hidden.step  # steps since the last compute
            serve = state.rate is not None and state.rate * since < c.threshold_at(info)
        if not serve:
            return self._compute(state)
        state.reuses += 1
        new_encoder = encoder
        if encoder is not None and state.encoder.ready:
            new_encoder = encoder + state.encoder.forecast(info.step)
        return hidden + state.hidden.forecast(info.step), new_encoder

    @staticmethod
    def _compute(state: _State) -> None:
        state.accumulated, state.reuses = 0.0, 0
        return None

    def computed(self, info: StepInfo, hidden: torch.Tensor | None, encoder: torch.Tensor | None) -> None:
        state = self._state()
        if self.config.decide == "rate" and state.hidden.ready and info.step > state.hidden.step:
            change = _change(self.context, info, hidden, state.hidden.factors[0], self._halves())
            state.rate = float(change) / (info.step - state.hidden.step)  # the compute's one scalar read
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
            deep_range(adapter, denoiser, self.config.front_blocks, self.config.back, self.config.method)

    def apply(self, context: DenoiseContext) -> None:
        c, key = self.config, _KEY
        for index, denoiser in enumerate(context.adapter.denoisers()):
            if c.decide == "probe":
                first = flat_blocks(context.adapter, denoiser)[0]
                register_hook(first.module, InputProbe(context, index, first.io, f"{key}.probe"), _PROBE_HOOK)
                self._probes.append(first.module)
            blocks = deep_range(context.adapter, denoiser, c.front_blocks, c.back, c.method)
            self.attach_range(BlockRange(context, index, blocks, _AdaptivePolicy(context, c, key), key))

    def remove(self, context: DenoiseContext) -> None:
        super().remove(context)
        for module in self._probes:
            remove_hook(module, _PROBE_HOOK)
        self._probes.clear()
