"""``deepcache``: DeepCache adapted to DiTs (with Δ-DiT's residual form).

On full steps every block runs and the residual of the deep range (output minus input of the
blocks between the first ``front`` and the last ``back``) is stored; on the other steps the
shallow blocks run and the deep range is replaced by the stored residual added to the current
input, so fresh shallow features still flow through. Full steps follow a uniform or DeepCache's
non-uniform schedule (:mod:`.schedules`), plus warm-up and final steps. ``interval=1`` is exact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from ..hooks.block_range import BlockRange, Streams, flat_blocks
from ..hooks.context import DenoiseContext
from ..hooks.step_info import StepInfo
from ..pipelines import Adapter
from . import schedules
from .base import MethodConfig, RangeMethod
from .registry import register_method


@dataclasses.dataclass(frozen=True)
class DeepCacheConfig(MethodConfig):
    """``interval``: one full step in N (1: every step, exact). ``schedule``: ``uniform`` or
    DeepCache's ``nonuniform`` (full steps dense around ``center``, a share of the schedule, with
    exponent ``power``). ``front`` / ``back``: blocks always run at the start / end of the stack
    (counted across double- and single-stream lists). ``warmup`` / ``final``: steps always full."""

    method = "deepcache"
    interval: int = 3
    schedule: Literal["uniform", "nonuniform"] = "uniform"
    front: int = 1
    back: int = 0
    warmup: int = 1
    final: int = 1
    center: float = 0.3
    power: float = 1.4

    def __post_init__(self) -> None:
        self.check_range("interval", 1)
        self.check_range("front", 0)
        self.check_range("back", 0)
        self.check_range("warmup", 1)  # the first step has nothing cached yet
        self.check_range("final", 0)
        self.check_range("center", 0.0, 1.0)
        self.check_range("power", 1.0, 3.0)


@dataclass
class _Cache:
    hidden: torch.Tensor | None = None
    encoder: torch.Tensor | None = None


class _DeepCachePolicy:
    def __init__(self, context: DenoiseContext, config: DeepCacheConfig, key: str) -> None:
        self.context = context
        self.config = config
        self.key = key
        self._plan: tuple[int, frozenset[int]] | None = None

    def is_full(self, info: StepInfo) -> bool:
        if self._plan is None or self._plan[0] != info.total:
            c = self.config
            steps = schedules.full_steps(
                info.total,
                c.interval,
                c.schedule,
                warmup=c.warmup,
                final=c.final,
                center=c.center,
                power=c.power,
            )
            self._plan = (info.total, steps)
        return info.step in self._plan[1]

    def enter(self, info: StepInfo, hidden: torch.Tensor, encoder: torch.Tensor | None) -> Streams | None:
        cache = self.context.state(self.key, _Cache, by_rows=True)
        if self.is_full(info) or cache.hidden is None:
            return None
        new_encoder = encoder if encoder is None or cache.encoder is None else encoder + cache.encoder
        return hidden + cache.hidden, new_encoder

    def computed(self, info: StepInfo, hidden: torch.Tensor | None, encoder: torch.Tensor | None) -> None:
        cache = self.context.state(self.key, _Cache, by_rows=True)
        cache.hidden, cache.encoder = hidden, encoder


def deep_range(adapter: Adapter, denoiser: torch.nn.Module, front: int, back: int, method: str):
    """The blocks between the first ``front`` and the last ``back`` (ValueError when none are left)."""
    blocks = flat_blocks(adapter, denoiser)
    if front + back >= len(blocks):
        raise ValueError(
            f"{method}: front={front} + back={back} leaves no block to cache in a stack of {len(blocks)}"
        )
    return blocks[front : len(blocks) - back]


@register_method("deepcache")
class DeepCache(RangeMethod):
    config_class = DeepCacheConfig
    context_parallel = True
    exclusive = "step-cache"

    def check(self, adapter: Adapter) -> None:
        super().check(adapter)
        for denoiser in adapter.denoisers():
            deep_range(adapter, denoiser, self.config.front, self.config.back, self.config.method)

    def apply(self, context: DenoiseContext) -> None:
        c = self.config
        for index, denoiser in enumerate(context.adapter.denoisers()):
            policy = _DeepCachePolicy(context, c, "deepcache")
            blocks = deep_range(context.adapter, denoiser, c.front, c.back, c.method)
            self.attach_range(BlockRange(context, index, blocks, policy, "deepcache"))
